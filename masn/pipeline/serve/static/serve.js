// masn serve: small progressive enhancements; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("ask-form");
  if (form) {
    const upload = document.getElementById("upload");
    const hint = document.getElementById("upload-hint");
    const limit = Number(form.dataset.limit);
    // Refuse an oversized upload before sending it (the server refuses it too).
    form.addEventListener("submit", (event) => {
      const file = upload && upload.files[0];
      if (file && file.size > limit) {
        event.preventDefault();
        hint.hidden = false;
        hint.textContent = `${file.name} is ${(file.size / 1048576).toFixed(0)} MB; the limit is ${(limit / 1048576).toFixed(0)} MB.`;
        return;
      }
      document.getElementById("busy").hidden = false;
      document.getElementById("ask-button").disabled = true;
    });
  }
  // Clicking a sampled frame plays the source video from that moment.
  const video = document.querySelector("video#source");
  if (video) {
    for (const frame of document.querySelectorAll("figure.frame[data-time]")) {
      frame.style.cursor = "pointer";
      frame.addEventListener("click", () => { video.currentTime = Number(frame.dataset.time); video.play(); });
    }
  }
});
