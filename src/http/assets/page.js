/* global document, window, fetch, EventSource, URLSearchParams */
/**
 * The web page of `hotrestore serve`: shows the cluster and the snapshots, takes snapshots and
 * restores them through POST /api/actions, and follows every job live over /api/events (SSE).
 */
"use strict";

const CONFIG = JSON.parse(document.getElementById("hr-config").textContent);
const TOKEN = new URLSearchParams(window.location.search).get("token") ?? "";
const jobs = new Map();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function mib(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

async function api(path, init) {
  const response = await fetch(path, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
  });
  const body = await response.json();
  if (!response.ok)
    throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : response.statusText);
  return body;
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        headers.map((h) => el("th", {}, h)),
      ),
    ),
    el("tbody", {}, rows),
  );
}

async function refreshCluster() {
  const box = document.getElementById("cluster");
  try {
    const status = await api("/api/status");
    if (!status || !status.vms) {
      box.replaceChildren(
        el(
          "p",
          { class: "note", id: "no-cluster" },
          "No cluster is running. Start one with `npx hotrestore up <spec.json>`.",
        ),
      );
      return;
    }
    box.replaceChildren(
      el("p", {}, `Cluster ${status.cluster} · accel ${status.accel}`),
      table(
        ["VM", "state", "IP", "memory", "vCPUs"],
        status.vms.map((vm) =>
          el(
            "tr",
            { "data-vm": vm.name },
            el("td", {}, vm.name),
            el("td", { class: `state-${vm.state}` }, vm.state),
            el("td", {}, vm.ip),
            el("td", {}, `${vm.memoryMiB} MiB`),
            el("td", {}, vm.vcpus ?? ""),
          ),
        ),
      ),
    );
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, String(error)));
  }
}

function selectOf(name, values) {
  return el(
    "select",
    { name },
    values.map((v) => el("option", { value: v }, v)),
  );
}

async function refreshSnapshots() {
  const box = document.getElementById("snapshots");
  try {
    const list = await api("/api/snapshots");
    if (list.length === 0) {
      box.replaceChildren(el("p", { class: "note" }, "No snapshots yet."));
      return;
    }
    box.replaceChildren(
      table(
        ["name", "taken", "VMs", "stored", "pause", "restore"],
        list.map((s) => {
          if (s.status !== "ok") {
            return el(
              "tr",
              {},
              el("td", {}, s.name),
              el("td", { colspan: "5", class: "error" }, `damaged: ${s.error?.message ?? ""}`),
            );
          }
          const summary = s.summary;
          const strategy = selectOf("strategy", CONFIG.strategies);
          strategy.value = "hotrestore";
          const order = selectOf("order", CONFIG.orders);
          const button = el(
            "button",
            {
              type: "button",
              class: "restore",
              "data-name": summary.name,
              onclick: () =>
                post({ type: "restore", name: summary.name, strategy: strategy.value, order: order.value }),
            },
            "Restore",
          );
          return el(
            "tr",
            { "data-snapshot": summary.name },
            el("td", {}, summary.name),
            el("td", {}, new Date(summary.createdAt).toLocaleTimeString()),
            el("td", {}, summary.vms.map((vm) => vm.name).join(", ")),
            el("td", {}, mib(summary.storedBytes)),
            el("td", {}, `${summary.pauseMs} ms`),
            el("td", {}, strategy, " ", order, " ", button),
          );
        }),
      ),
    );
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, String(error)));
  }
}

async function post(action) {
  try {
    const job = await api("/api/actions", { method: "POST", body: JSON.stringify(action) });
    upsertJob(job);
  } catch (error) {
    upsertJob({
      id: `local-${Date.now()}`,
      action,
      state: "failed",
      error: { message: String(error) },
      progress: [],
    });
  }
}

function describe(job) {
  const a = job.action;
  return a.type === "restore"
    ? `restore ${a.name} (${a.strategy}, ${a.order})`
    : `${a.type}${a.name ? ` ${a.name}` : ""}`;
}

function outcome(job) {
  if (job.state === "failed") return el("div", { class: "error" }, `failed: ${job.error?.message ?? "?"}`);
  if (job.state !== "done") return null;
  const r = job.result;
  if (job.action.type === "restore" && r) {
    const ttrs = r.vms.map((vm) => vm.ttrMs).filter((v) => v !== null);
    return el(
      "div",
      { class: "job-result" },
      `restore finished: every VM running ${r.restoreLatencyMs} ms after the command` +
        (ttrs.length ? `, responsive by ${Math.max(...ttrs)} ms` : "") +
        `; max TCP backoff ${r.backoff.maxMs ?? "–"} ms, ${r.retransmits} retransmissions`,
    );
  }
  if (job.action.type === "snapshot" && r) {
    return el(
      "div",
      { class: "job-result" },
      `snapshot ${r.name}: cluster paused ${r.pauseMs} ms, ${mib(r.storedBytes)} stored`,
    );
  }
  return el("div", { class: "job-result" }, "done");
}

function upsertJob(job) {
  const known = jobs.get(job.id) ?? { progress: [] };
  const merged = { ...known, ...job, progress: job.progress ?? known.progress };
  jobs.set(job.id, merged);
  renderJobs();
  if (job.state && job.state !== "running") {
    void refreshSnapshots();
    void refreshCluster();
  }
}

function renderJobs() {
  const box = document.getElementById("jobs");
  const list = [...jobs.values()].sort((a, b) =>
    String(b.id).localeCompare(String(a.id), "en", { numeric: true }),
  );
  box.replaceChildren(
    ...list.map((job) => {
      const last = job.progress[job.progress.length - 1];
      return el(
        "div",
        { class: "job", "data-id": String(job.id), "data-type": job.action.type, "data-state": job.state },
        el("div", { class: "head" }, `#${job.id} ${describe(job)} — ${job.state}`),
        job.state === "running" && last
          ? el(
              "div",
              { class: "last" },
              `${last.step}${last.vm ? ` ${last.vm}` : ""}${last.detail ? `: ${last.detail}` : ""}`,
            )
          : null,
        outcome(job),
      );
    }),
  );
}

function connectEvents() {
  const conn = document.getElementById("conn");
  const source = new EventSource(`/api/events?token=${encodeURIComponent(TOKEN)}`);
  source.addEventListener("open", () => {
    conn.dataset.state = "live";
    conn.textContent = "live";
  });
  source.addEventListener("error", () => {
    conn.dataset.state = "lost";
    conn.textContent = "reconnecting…";
  });
  source.addEventListener("job", (event) => {
    const { job } = JSON.parse(event.data);
    upsertJob(job);
  });
  source.addEventListener("progress", (event) => {
    const { id, note } = JSON.parse(event.data);
    const job = jobs.get(id);
    if (!job) return;
    job.progress.push(note);
    if (note.step === "started" || note.step === "ready") void refreshCluster();
    renderJobs();
  });
}

document.getElementById("snapshot-btn").addEventListener("click", () => void post({ type: "snapshot" }));
connectEvents();
void refreshCluster();
void refreshSnapshots();
window.setInterval(() => void refreshCluster(), 3000);
