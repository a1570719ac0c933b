// A minimal live feed of item.reported events. Sign-in turns the token into
// an HttpOnly session cookie, so no token sits in a URL; EventSource then
// sends the cookie and resumes through Last-Event-ID after a reconnect.
const $ = (id) => document.getElementById(id);

async function session(token) {
  const opts = token
    ? { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) }
    : { method: "GET" };
  const res = await fetch("/v1/session", { ...opts, credentials: "same-origin" });
  return res.ok ? res.json() : null;
}

function live(who) {
  $("signin").hidden = true;
  $("live").hidden = false;
  $("who").textContent = `${who.name} (${who.role})`;
  const feed = $("feed");
  const state = $("state");
  const es = new EventSource("/v1/sse?channel=reports");
  es.onopen = () => { state.textContent = "live"; };
  es.onerror = () => { state.textContent = "reconnecting"; };
  es.addEventListener("gap", () => { state.textContent = "live (missed events)"; });
  es.addEventListener("item.reported", (e) => {
    const ev = JSON.parse(e.data);
    const d = ev.data || {};
    const li = document.createElement("li");
    li.textContent = `${d.reported_at || ev.time || ""} — ${d.item_id || ev.subject}: ${d.reason || ""} (by ${d.reporter_id || "?"})`;
    feed.prepend(li);
    while (feed.children.length > 200) feed.lastChild.remove();
  });
}

async function main() {
  // A token in the page's URL (as printed at start) is exchanged for the
  // cookie at once and removed from the address bar and history.
  const params = new URLSearchParams(location.search);
  let who = null;
  if (params.has("access_token")) {
    who = await session(params.get("access_token"));
    history.replaceState(null, "", location.pathname);
  }
  who = who || (await session());
  if (who) return live(who);
  $("signin").hidden = false;
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const who = await session($("token").value);
    $("token").value = "";
    if (who) live(who);
    else $("signin-error").textContent = "Unknown token.";
  });
}
main();
