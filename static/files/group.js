// The "Group" panel: follow one group's channel, group:<id>, and list what
// is posted to it (item.posted events: item_id, group_id, author_id, title,
// posted_at), newest first, from what the hub still holds on. The group
// followed is remembered in this browser.
import { $, h, when, num, validItem } from "./dom.js";
import { Stream } from "./stream.js";

const CAP = 200; // posts kept in the list
const KEY = "switchboard.group";

export class GroupPanel {
  // opts: {onAuthLost()}
  constructor(opts) {
    this.opts = opts;
    this.stream = null;
    this.group = "";
    this.seen = 0;
    $("group-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("group-id").value.trim();
      if (!validItem(id)) {
        $("group-error").textContent = id
          ? "A group ID is 1 to 128 letters, digits, or . _ ~ -"
          : "Enter the ID of the group to follow.";
        $("group-id").setAttribute("aria-invalid", "true");
        $("group-id").focus();
        return;
      }
      this.follow(id);
    });
    $("group-stop").addEventListener("click", () => {
      this.unfollow();
      try {
        localStorage.removeItem(KEY);
      } catch {}
      $("group-id").focus();
    });
  }

  // resume follows the group this browser followed last, if any.
  resume() {
    let id = "";
    try {
      id = localStorage.getItem(KEY) || "";
    } catch {}
    if (validItem(id)) {
      $("group-id").value = id;
      this.follow(id);
    }
  }

  follow(id) {
    this.unfollow();
    this.group = id;
    try {
      localStorage.setItem(KEY, id);
    } catch {}
    $("group-error").textContent = "";
    $("group-id").removeAttribute("aria-invalid");
    $("group-stop").hidden = false;
    $("group-title").textContent = `Group ${id}`;
    $("group-posts").dataset.group = id;
    $("group-empty").textContent = `Nothing posted to ${id} yet.`;
    this.stream = new Stream([`group:${id}`], {
      fromOldest: true,
      onEvent: (ev) => this.add(ev),
      onState: (s) => ($("group-posts").dataset.state = s),
      onAuthLost: this.opts.onAuthLost,
    });
    this.stream.open();
  }

  unfollow() {
    this.stream?.close();
    this.stream = null;
    this.group = "";
    this.seen = 0;
    $("group-posts").replaceChildren();
    delete $("group-posts").dataset.group;
    delete $("group-posts").dataset.state;
    $("group-title").textContent = "Group";
    $("group-meta").textContent = "";
    $("group-stop").hidden = true;
    $("group-empty").hidden = false;
    $("group-empty").textContent = "Follow a group to see what is posted to it, live.";
  }

  add(ev) {
    if (ev.type !== "item.posted") return;
    const d = ev.data && typeof ev.data === "object" ? ev.data : {};
    const str = (v) => (typeof v === "string" || typeof v === "number" ? String(v) : "");
    const item = str(d.item_id) || str(ev.subject);
    const list = $("group-posts");
    list.prepend(
      h(
        "li",
        { class: "post", "data-event-id": ev.id, "data-item": item },
        when(str(d.posted_at) || ev.time || new Date()),
        h("span", { class: "post-title" }, str(d.title) || "(untitled)"),
        validItem(item) ? h("button", { type: "button", class: "item-link", "data-open-item": item, "aria-label": `Open ${item}` }, item) : h("span", {}, item),
        h("span", { class: "reporter muted" }, `by ${str(d.author_id) || "unknown"}`),
      ),
    );
    while (list.childElementCount > CAP) list.lastElementChild.remove();
    this.seen++;
    $("group-empty").hidden = true;
    $("group-meta").textContent = `${num(this.seen)} post${this.seen === 1 ? "" : "s"}`;
  }
}
