//! Bitrix24 implementation of the `Crm` trait.
