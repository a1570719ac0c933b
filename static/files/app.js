// A minimal live feed of item.reported events over EventSource; it resumes
// through Last-Event-ID after a reconnect. The full moderator page replaces it.
const feed = document.getElementById("feed");
const state = document.getElementById("state");
const params = new URLSearchParams(location.search);
const token = params.get("access_token");
const url = "/v1/sse?channel=reports" + (token ? "&access_token=" + encodeURIComponent(token) : "");
const es = new EventSource(url);
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
