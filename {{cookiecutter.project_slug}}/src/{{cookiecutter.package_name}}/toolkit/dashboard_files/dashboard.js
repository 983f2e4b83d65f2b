// Refreshes the dashboard from /api/status and /api/workers; everything is text (no HTML from data).
"use strict";
const info = JSON.parse(document.body.dataset.info);

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function bar(row) {
  const outer = document.createElement("div");
  outer.className = "bar table-progress";
  outer.setAttribute("role", "progressbar");
  outer.setAttribute("aria-valuemin", "0");
  outer.setAttribute("aria-valuemax", String(row.total));
  outer.setAttribute("aria-valuenow", String(row.done));
  outer.dataset.table = row.table;
  const total = Math.max(row.total, 1);
  for (const part of ["done", "reserved", "errors"]) {
    const span = document.createElement("span");
    span.className = part;
    span.style.width = (100 * Math.min(row[part], total) / total) + "%";
    span.title = part + ": " + row[part];
    outer.appendChild(span);
  }
  return outer;
}

async function retry(table) {
  const response = await fetch("/api/retry/" + encodeURIComponent(table), {
    method: "POST", headers: {"Content-Type": "application/json"}, body: "{}",
  });
  const answer = await response.json();
  alert(answer.error || (answer.requeued + " job(s) of " + table + " back in the queue"));
  refresh();
}

function showStatus(report) {
  const progress = document.querySelector("#progress tbody");
  const errors = document.querySelector("#errors tbody");
  progress.replaceChildren();
  errors.replaceChildren();
  for (const row of report) {
    if (row.total === undefined) continue;  // Manual, Lookup and Part tables: no progress
    const tr = progress.insertRow();
    cell(tr, row.table);
    tr.insertCell().appendChild(bar(row));
    cell(tr, row.done + " / " + row.total, "number");
    cell(tr, row.remaining, "number");
    cell(tr, row.reserved, "number");
    cell(tr, row.errors, row.errors ? "number failed" : "number");
    const action = tr.insertCell();
    if (info.allow_retry && row.errors) {
      const button = document.createElement("button");
      button.textContent = "retry failed";
      button.className = "retry";
      button.addEventListener("click", () => retry(row.table));
      action.appendChild(button);
    }
    for (const error of row.latest_errors) {
      const er = errors.insertRow();
      er.className = "error";
      cell(er, row.table);
      cell(er, JSON.stringify(error.key));
      cell(er, error.message, "message");
    }
  }
}

function showWorkers(workers) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const worker of workers) {
    const tr = body.insertRow();
    tr.className = "worker";
    for (const value of [worker.host, worker.pid, worker.since, worker.last_seen, worker.reserved]) {
      cell(tr, value);
    }
    cell(tr, worker.tables.join(", "));
  }
}

async function refresh() {
  try {
    const [status, workers] = await Promise.all(
      ["/api/status", "/api/workers"].map(async (url) => {
        const response = await fetch(url);
        if (!response.ok) {
          const answer = await response.json().catch(() => ({}));
          throw new Error(answer.error || url + ": HTTP " + response.status);
        }
        return response.json();
      }));
    showStatus(status);
    showWorkers(workers);
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("updated").textContent = "Cannot refresh: " + error.message;
  }
}

async function showTables(schema) {
  const target = document.getElementById("tables");
  const response = await fetch("/diagram/" + encodeURIComponent(schema) + ".svg");
  const heading = document.createElement("h3");
  heading.textContent = "Tables of " + schema;
  target.replaceChildren(heading);
  if (!response.ok) {
    heading.textContent += ": " + (await response.text());
    return;
  }
  const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml").documentElement;
  target.appendChild(document.importNode(svg, true));
}

document.getElementById("source").textContent =
  "Schemas " + info.prefix + "* on " + info.database + (info.allow_retry ? " · retry enabled" : "");
for (const node of document.querySelectorAll("#diagram [data-schema]")) {
  node.addEventListener("click", (event) => { event.preventDefault(); showTables(node.dataset.schema); });
}
const wanted = new URLSearchParams(location.search).get("schema");
if (wanted) showTables(wanted);
refresh();
setInterval(refresh, 1000 * info.refresh_seconds);
