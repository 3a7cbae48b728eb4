/*
 * Console behaviour, all of it progressive enhancement (every page works without it):
 *  - before/after comparison: overlays the two images with a slider (keyboard: the
 *    range input; pointer: drag on the image);
 *  - render progress: polls the session-authenticated status JSON with fetch() and
 *    updates the steps, the label and the elapsed time in place;
 *  - playground: submits the form with fetch(), then shows progress and the result
 *    without a page load. Without JS the form posts normally and redirects to the
 *    render's page. Prompt suggestions fill the prompt field.
 * No external requests, no libraries.
 */
(function () {
  "use strict";

  var STEPS = ["queued", "matting", "generating", "composing", "done"];

  function formatSeconds(value) {
    if (value === null || value === undefined || isNaN(value)) return "";
    if (value < 60) return value.toFixed(1) + " s";
    var minutes = Math.floor(value / 60);
    var rest = Math.round(value - minutes * 60);
    return minutes + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }

  /* Error messages come from the API's registry, written in Markdown's `backticks` for
     commands and field names: shown as <code>, built as nodes (never innerHTML). */
  function setTextWithCode(element, text) {
    element.textContent = "";
    String(text || "").split(/`([^`]+)`/).forEach(function (part, index) {
      if (!part) return;
      if (index % 2) {
        var code = document.createElement("code");
        code.textContent = part;
        element.appendChild(code);
      } else {
        element.appendChild(document.createTextNode(part));
      }
    });
  }

  /* --- before/after ------------------------------------------------------------ */

  function initCompare(figure) {
    var control = figure.querySelector(".compare-control");
    var range = control && control.querySelector("input[type=range]");
    var frame = figure.querySelector(".compare-frame");
    if (!range || !frame || figure.classList.contains("compare-ready")) return;
    control.hidden = false;
    figure.classList.add("compare-ready");
    var dragging = false;

    function set(value) {
      value = Math.max(0, Math.min(100, Number(value)));
      range.value = String(Math.round(value));
      frame.style.setProperty("--pos", value + "%");
      range.setAttribute("aria-valuetext", Math.round(value) + "% original");
    }
    function fromPointer(event) {
      var box = frame.getBoundingClientRect();
      if (box.width > 0) set(((event.clientX - box.left) / box.width) * 100);
    }
    range.addEventListener("input", function () { set(range.value); });
    frame.addEventListener("pointerdown", function (event) {
      dragging = true;
      if (frame.setPointerCapture) frame.setPointerCapture(event.pointerId);
      fromPointer(event);
    });
    frame.addEventListener("pointermove", function (event) { if (dragging) fromPointer(event); });
    frame.addEventListener("pointerup", function () { dragging = false; });
    frame.addEventListener("pointercancel", function () { dragging = false; });
    set(range.value);
  }

  /* --- progress ---------------------------------------------------------------- */

  /* A step's state as the server computed it (progress.states: done, current, failed,
     not-reached or ""); without it, counted from progress.step as for an open render. */
  function stateOf(step, progress) {
    if (progress.states) return progress.states[step] || "";
    var index = STEPS.indexOf(step);
    return index < progress.step ? "done" : index === progress.step ? "current" : "";
  }

  function showProgress(panel, progress) {
    var current = progress.step;
    panel.querySelectorAll("[data-step]").forEach(function (item) {
      var state = stateOf(item.getAttribute("data-step"), progress);
      if (state) item.setAttribute("data-state", state); else item.removeAttribute("data-state");
    });
    var label = panel.querySelector("[data-progress-label]");
    if (label && label.textContent !== progress.label) label.textContent = progress.label;
    var bar = panel.querySelector("[data-progress-bar]");
    if (bar) bar.value = current;
    panel._clock = {
      elapsed: progress.elapsed_seconds,
      stage: progress.stage_elapsed_seconds,
      at: Date.now(),
      running: progress.phase !== "succeeded" && progress.phase !== "failed"
    };
    tickClock(panel);
  }

  function tickClock(panel) {
    var clock = panel._clock;
    if (!clock) return;
    var extra = clock.running ? (Date.now() - clock.at) / 1000 : 0;
    var elapsed = panel.querySelector("[data-progress-elapsed]");
    if (elapsed) elapsed.textContent = formatSeconds(clock.elapsed + extra);
    var stage = panel.querySelector("[data-progress-stage-time]");
    if (stage) {
      stage.textContent = clock.running && clock.stage !== null ? " (this step: " + formatSeconds(clock.stage + extra) + ")" : "";
    }
  }

  function startClock(panel) {
    if (panel._timer) return;
    panel._timer = window.setInterval(function () { tickClock(panel); }, 200);
  }

  function stopClock(panel) {
    if (panel._timer) window.clearInterval(panel._timer);
    panel._timer = null;
  }

  function getJson(url) {
    return fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      return response.json().then(function (data) {
        return { status: response.status, ok: response.ok, data: data };
      });
    });
  }

  function poll(panel, url, onEnd) {
    var started = Date.now();
    var label = panel.querySelector("[data-progress-label]");
    startClock(panel);

    function again() {
      var waited = Date.now() - started;
      window.setTimeout(tick, waited > 60000 ? 3000 : waited > 20000 ? 2000 : 1000);
    }
    function tick() {
      getJson(url).then(function (result) {
        if (!result.ok) {
          if (label) label.textContent = (result.data.error && result.data.error.message) || "The status is unavailable.";
          if (result.status >= 500) again(); else stopClock(panel);
          return;
        }
        showProgress(panel, result.data.progress);
        if (result.data.status === "succeeded" || result.data.status === "failed") {
          stopClock(panel);
          onEnd(result.data);
        } else {
          again();
        }
      }).catch(function () {
        if (label) label.textContent = "Connection lost; retrying…";
        again();
      });
    }
    tick();
  }

  /* --- playground -------------------------------------------------------------- */

  /* Prompt suggestions: hidden without JS (they would do nothing); a click fills the
     prompt field and puts the cursor at its end, ready to submit or edit. */
  function initSuggestions(form) {
    var box = form.querySelector("[data-prompt-suggestions]");
    var prompt = form.querySelector('[name="scene_prompt"]');
    if (!box || !prompt) return;
    box.hidden = false;
    box.querySelectorAll("[data-prompt-suggestion]").forEach(function (button) {
      button.addEventListener("click", function () {
        prompt.value = button.getAttribute("data-prompt-suggestion");
        prompt.removeAttribute("aria-invalid");
        var error = form.querySelector('[data-error-for="scene_prompt"]');
        if (error) error.textContent = "";
        prompt.focus();
        prompt.setSelectionRange(prompt.value.length, prompt.value.length);
      });
    });
  }

  function initPlayground(form) {
    var button = form.querySelector("[data-submit]");
    var buttonText = button ? button.textContent : "";
    var progressBox = document.querySelector("[data-playground-progress]");
    var panel = progressBox && progressBox.querySelector("[data-progress]");
    var result = document.querySelector("[data-playground-result]");

    function chosenSource() {
      var checked = form.querySelector("[data-source-choice]:checked");
      return checked ? checked.value : "upload";
    }
    function showSource() {
      var source = chosenSource();
      form.querySelectorAll("[data-source-panel]").forEach(function (element) {
        element.hidden = element.getAttribute("data-source-panel") !== source;
      });
    }
    form.querySelectorAll("[data-source-choice]").forEach(function (radio) {
      radio.addEventListener("change", showSource);
    });
    showSource();
    initSuggestions(form);

    function clearErrors() {
      form.querySelectorAll("[data-error-for]").forEach(function (element) {
        var general = element.getAttribute("data-error-for") === "";
        element.textContent = "";
        if (general) element.hidden = true;
      });
      form.querySelectorAll("[aria-invalid]").forEach(function (element) { element.removeAttribute("aria-invalid"); });
    }
    function showErrors(body) {
      var errors = (body && body.errors) || {};
      var first = null;
      Object.keys(errors).forEach(function (field) {
        var target = form.querySelector('[data-error-for="' + field + '"]') || form.querySelector('[data-error-for=""]');
        target.textContent = errors[field].join(" ");
        target.hidden = false;
        var input = field ? form.querySelector('[name="' + field + '"]') : null;
        if (input) {
          input.setAttribute("aria-invalid", "true");
          first = first || input;
        }
      });
      if (!Object.keys(errors).length) {
        var general = form.querySelector('[data-error-for=""]');
        general.textContent = (body && body.error && body.error.message) || "Something went wrong; please try again.";
        general.hidden = false;
      }
      if (first) first.focus();
    }
    function ready() {
      if (!button) return;
      button.disabled = false;
      button.textContent = buttonText;
    }
    function showResult(data) {
      var succeeded = result.querySelector("[data-result-succeeded]");
      var failed = result.querySelector("[data-result-failed]");
      result.querySelector("[data-result-detail]").href = data.detail_url;
      if (data.status === "succeeded") {
        var figure = succeeded.querySelector("[data-compare-result]");
        succeeded.querySelector("[data-result-before]").src = data.input_url;
        succeeded.querySelector("[data-result-after]").src = data.output_url;
        succeeded.querySelector("[data-result-summary]").textContent =
          "Charged " + data.credits_charged + " credits in " + formatSeconds(data.progress.elapsed_seconds) +
          "; " + data.credits_available + " credits left.";
        initCompare(figure);
        succeeded.hidden = false;
        failed.hidden = true;
      } else {
        failed.querySelector("[data-result-error-code]").textContent = data.error ? data.error.code : "";
        setTextWithCode(failed.querySelector("[data-result-error-message]"), data.error ? data.error.message : "");
        failed.hidden = false;
        succeeded.hidden = true;
      }
      var credits = document.querySelector('[data-testid="credits-available"]');
      if (credits && data.credits_available !== undefined) credits.textContent = data.credits_available;
      result.hidden = false;
      var heading = result.querySelector("h2");
      if (heading) heading.focus();
    }

    form.addEventListener("submit", function (event) {
      if (!window.fetch || !window.FormData || !panel) return; // let the browser post it
      event.preventDefault();
      clearErrors();
      var body = new FormData(form);
      if (chosenSource() === "url") body.delete("image_file"); else body.delete("image_url");
      if (button) {
        button.disabled = true;
        button.textContent = "Starting…";
      }
      fetch(form.action, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { Accept: "application/json" }
      }).then(function (response) {
        return response.json().then(function (data) { return { status: response.status, data: data }; });
      }).then(function (answer) {
        if (answer.status !== 202) {
          showErrors(answer.data);
          ready();
          return;
        }
        if (button) button.textContent = "Rendering…";
        result.hidden = true;
        progressBox.hidden = false;
        panel.setAttribute("data-status-url", answer.data.status_url);
        showProgress(panel, { phase: "queued", label: "Queued, waiting for a GPU", step: 0,
                              elapsed_seconds: 0, stage_elapsed_seconds: null });
        poll(panel, answer.data.status_url, function (data) {
          showResult(data);
          ready();
        });
      }).catch(function () {
        showErrors({ error: { message: "Could not reach the server. Check your renders before you try again." } });
        ready();
      });
    });
  }

  /* --- start -------------------------------------------------------------------- */

  function start() {
    document.querySelectorAll("[data-compare]").forEach(initCompare);
    document.querySelectorAll("form[data-playground]").forEach(initPlayground);
    document.querySelectorAll("[data-progress][data-status-url]").forEach(function (panel) {
      var url = panel.getAttribute("data-status-url");
      if (!url) return;
      poll(panel, url, function () {
        if (panel.hasAttribute("data-reload-on-finish")) window.location.reload();
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
