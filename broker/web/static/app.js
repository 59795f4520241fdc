// The auditors' pages: the in-page player, the verify button, the review box.
// No inline scripts (the Content-Security-Policy forbids them); all state comes from the page.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function setUpPlayers() {
  if (typeof AsciinemaPlayer === "undefined") return;
  for (const box of document.querySelectorAll(".player[data-src]")) {
    // The recording is fetched (and its viewing audited) only when it is played.
    AsciinemaPlayer.create(box.dataset.src, box, {
      cols: Number(box.dataset.cols) || 80,
      rows: Number(box.dataset.rows) || 24,
      fit: "width",
      idleTimeLimit: 2,
      preload: false,
    });
  }
}

function setUpVerify() {
  const button = document.getElementById("verify");
  if (!button) return;
  const result = document.getElementById("verify-result");
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.className = "verify";
    result.textContent = "Checking the chain, its signatures and the recordings...";
    try {
      const report = await api("GET", `/api/v1/verify?ticket=${encodeURIComponent(button.dataset.ticket)}`);
      result.className = report.ok ? "verify ok" : "verify broken";
      result.textContent = report.summary;
    } catch (error) {
      result.className = "verify broken";
      result.textContent = `Could not verify: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

function setUpReview() {
  const form = document.getElementById("review");
  if (!form) return;
  const result = document.getElementById("review-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = event.submitter ? event.submitter.value : "reviewed";
    const note = form.elements.note.value;
    try {
      await api("POST", `/api/v1/sessions/${form.dataset.session}/reviews`, { status, note });
      window.location.reload();
    } catch (error) {
      result.textContent = `Not saved: ${error.message}`;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpPlayers();
  setUpVerify();
  setUpReview();
});
