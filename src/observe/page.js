// gitsync's status page: renders each `view` event of /events (Server-Sent Events).
// Text only goes through textContent, never HTML: names and notes come from repositories.
"use strict";

const words = {
  up_to_date: "up to date",
  no_upstream: "no upstream",
  upstream_gone: "upstream gone",
};

function age(iso, now) {
  if (!iso) return "never";
  const secs = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (secs < 60) return secs + "s ago";
  if (secs < 3600) return Math.floor(secs / 60) + "m ago";
  if (secs < 86400) return Math.floor(secs / 3600) + "h ago";
  return Math.floor(secs / 86400) + "d ago";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function stamp(el, iso) {
  el.dataset.at = iso || "";
  el.textContent = age(iso, Date.now());
}

function renderRows(rows) {
  const body = document.querySelector("#repos tbody");
  const trs = rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.host = r.host;
    tr.dataset.repo = r.repo;
    tr.dataset.state = r.state;
    tr.className = "state-" + r.state + (r.liveness === "online" ? "" : " host-" + r.liveness);
    cell(tr, r.repo, "repo");
    cell(tr, r.host + (r.liveness === "online" ? "" : " (" + r.liveness + ")"), "host");
    cell(tr, words[r.state] || r.state, "state");
    cell(tr, r.branch || "(detached)", "branch");
    cell(tr, r.head || "", "head");
    cell(tr, (r.ahead || r.behind) ? r.ahead + " ↑ " + r.behind + " ↓" : "", "ab");
    cell(tr, r.dirty, "dirty");
    stamp(cell(tr, "", "updated"), r.updated_at);
    cell(tr, r.note, "note");
    return tr;
  });
  body.replaceChildren(...trs);
  document.getElementById("repos-empty").hidden = rows.length > 0;
}

function renderHosts(hosts) {
  const items = hosts.map((h) => {
    const li = document.createElement("li");
    li.dataset.host = h.host;
    li.className = "host-" + h.liveness;
    const name = document.createElement("strong");
    name.textContent = h.host;
    const what = document.createElement("span");
    what.textContent = " " + h.liveness + ", gitsync " + h.version + ", heartbeat ";
    const when = document.createElement("span");
    stamp(when, h.last_seen);
    li.append(name, what, when);
    if (h.problem) {
      const p = document.createElement("span");
      p.className = "problem";
      p.textContent = " — " + h.problem;
      li.append(p);
    }
    return li;
  });
  document.getElementById("hosts").replaceChildren(...items);
}

function renderJobs(jobs) {
  for (const kind of ["deploy", "webhook_mirror", "bucket_mirror"]) {
    const list = document.getElementById(kind);
    const mine = jobs.filter((j) => j.kind === kind);
    const items = mine.map((j) => {
      const li = document.createElement("li");
      li.dataset.name = j.name;
      li.className = "result-" + j.result.replace(" ", "-");
      const name = document.createElement("strong");
      name.textContent = j.name;
      const what = document.createElement("span");
      const took = j.seconds == null ? "" : " (took " + j.seconds.toFixed(1) + " s)";
      what.textContent = " " + j.result + took + (j.at ? ", last run " : "");
      const when = document.createElement("span");
      if (j.at) stamp(when, j.at);
      li.append(name, what, when);
      return li;
    });
    if (items.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "none configured";
      items.push(li);
    }
    list.replaceChildren(...items);
  }
}

let views = 0;
function render(view) {
  views += 1;
  document.body.dataset.views = String(views);
  document.getElementById("here").textContent = "on " + view.here;
  document.title = "gitsync on " + view.here;
  renderRows(view.rows);
  renderHosts(view.hosts);
  renderJobs(view.jobs);
}

function live(state, text) {
  const el = document.getElementById("live");
  el.dataset.live = state;
  el.textContent = text;
}

// Relative times move on without a new event.
setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-at]")) {
    if (el.dataset.at) el.textContent = age(el.dataset.at, now);
  }
}, 1000);

const source = new EventSource("/events");
source.addEventListener("view", (e) => {
  try {
    render(JSON.parse(e.data));
    live("live", "live: updates as they happen");
  } catch (err) {
    live("error", "cannot show an update: " + err);
  }
});
source.addEventListener("open", () => live("live", "live: updates as they happen"));
source.addEventListener("error", () => live("reconnecting", "not connected to the daemon: reconnecting…"));
