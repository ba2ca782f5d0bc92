/* leadscore tracking snippet: page views, downloads and form submits, first-party.
   <script src="https://LEADSCORE/track.js" data-portal="PORTAL" data-key="SITE_KEY"
           data-consent="required|none" async></script>
   With data-consent="required" nothing is sent (nor a visitor id kept) until the page
   calls leadscore.consent(). leadscore.visitor() gives the id for the site's backend
   to pass to /identify. */
(function () {
  var s = document.currentScript, base = s.src.replace(/\/track\.js.*$/, "");
  var portal = s.getAttribute("data-portal"), key = s.getAttribute("data-key");
  var needConsent = s.getAttribute("data-consent") === "required";
  var KEY = "leadscore_vid", queue = [], timer = null, allowed = !needConsent, link = null;
  try {
    var q = new URLSearchParams(location.search);
    link = q.get("ls");
    if (link) { q.delete("ls"); history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : "") + location.hash); }
  } catch (e) {}
  function vid() {
    var v = null;
    try { v = localStorage.getItem(KEY); } catch (e) {}
    if (!v || !/^[A-Za-z0-9_-]{8,64}$/.test(v)) {
      var a = new Uint8Array(16); (window.crypto || window.msCrypto).getRandomValues(a);
      v = "v-" + Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
      try { localStorage.setItem(KEY, v); } catch (e) {}
    }
    return v;
  }
  function flush() {
    timer = null;
    if (!allowed || !queue.length) return;
    var batch = { k: key, v: vid(), e: queue.splice(0, 10) };
    if (link) { batch.ls = link; link = null; }
    var body = JSON.stringify(batch);
    var url = base + "/track/" + encodeURIComponent(portal);
    if (!(navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: "text/plain" })))) {
      fetch(url, { method: "POST", body: body, keepalive: true, mode: "cors", headers: { "content-type": "text/plain" } });
    }
    if (queue.length) timer = setTimeout(flush, 1000);
  }
  function push(t, u, ti) {
    queue.push({ t: t, u: String(u).slice(0, 2048), ti: ti ? String(ti).slice(0, 200) : undefined, ts: Date.now() });
    if (!timer) timer = setTimeout(flush, 500);
  }
  document.addEventListener("click", function (ev) {
    var a = ev.target && ev.target.closest ? ev.target.closest("a[href]") : null;
    if (a && /\.(pdf|docx?|xlsx?|pptx?|zip)(\?|#|$)/i.test(a.href)) push("download", a.href, a.textContent);
  }, true);
  document.addEventListener("submit", function (ev) {
    // A form whose CRM field keeps `leadscore_visitor` tells the CRM who filled it in.
    var f = ev.target, ids = allowed && f && f.querySelectorAll ? f.querySelectorAll("input[name=leadscore_visitor]") : [];
    for (var i = 0; i < ids.length; i++) ids[i].value = vid();
    push("form", location.href, f && f.getAttribute("name"));
    flush();
  }, true);
  addEventListener("pagehide", flush);
  push("page_view", location.href, document.title);
  window.leadscore = {
    consent: function () { allowed = true; flush(); },
    visitor: function () { return allowed ? vid() : null; },
    track: push
  };
})();
