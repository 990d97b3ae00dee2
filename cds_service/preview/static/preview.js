/*
 * Card preview page, the form: build a hook request (POST /preview/hook-request) from a scenario or
 * pasted JSON, send it to the real /cds-services/{id} endpoint, and hand the cards to CdsCards
 * (cards.js), which renders them like an EHR sidebar and posts real feedback.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("preview-data").textContent);
  var sidebar = window.CdsCards;
  var el = sidebar.el, pretty = sidebar.pretty, postJson = sidebar.postJson, outcomeText = sidebar.outcomeText;
  var $ = function (id) { return document.getElementById(id); };
  var lastServiceId = null;
  var lastRequest = null;
  var lastInstant = "";

  function setStatus(message, kind) {
    var status = $("status");
    status.textContent = "";
    status.className = "status " + (kind || "info");
    status.appendChild(el("p", {}, message));
    return status;
  }

  function serviceForHook(hook) {
    var found = data.services.filter(function (s) { return s.hook === hook; })[0];
    return found ? found.id : null;
  }

  function selectedScenario() {
    var name = $("scenario").value;
    return data.scenarios.filter(function (s) { return s.name === name; })[0] || null;
  }

  /* Keep the form consistent: paste vs scenario, drug only for order hooks, instant vs re-base. */
  function syncForm() {
    var paste = document.querySelector("input[name=source]:checked").value === "paste";
    $("scenario-fields").hidden = paste;
    $("paste-fields").hidden = !paste;
    $("drug-fields").hidden = $("hook").value === "patient-view";
    var rebase = $("rebase").checked;
    $("rebase").disabled = paste;
    $("instant").disabled = rebase && !paste;
    if (rebase && !paste) $("instant").value = "";
  }

  function onScenarioChange() {
    var scenario = selectedScenario();
    $("instant").value = scenario && !$("rebase").checked ? scenario.at : "";
  }

  /* Turn the form into {serviceId, request, instant}. */
  async function buildRequest() {
    var hook = $("hook").value;
    var build = { hook: hook };
    if (hook !== "patient-view") build.drug = $("drug").value;
    if (document.querySelector("input[name=source]:checked").value === "scenario") {
      build.scenario = $("scenario").value;
      build.rebase = $("rebase").checked;
    } else {
      var pasted;
      try { pasted = JSON.parse($("pasted").value); } catch (e) { throw new Error("The pasted text is not JSON: " + e.message); }
      if (pasted && pasted.hook && pasted.context) {
        var id = serviceForHook(pasted.hook);
        if (!id) throw new Error("No service of this server handles the hook '" + pasted.hook + "'.");
        return { serviceId: id, request: pasted, instant: $("instant").value.trim() };
      }
      if (!pasted || pasted.resourceType !== "Bundle") {
        throw new Error("Paste a CDS Hooks request (with hook and context) or a FHIR Bundle.");
      }
      build.bundle = pasted;
    }
    var answer = await postJson("/preview/hook-request", build);
    if (answer.status !== 200) throw new Error("Could not build the request (HTTP " + answer.status + "): " + outcomeText(answer));
    var typed = $("instant").value.trim();
    var instant = build.rebase ? "" : (typed || answer.json.evaluationInstant || "");
    if (!build.rebase) $("instant").value = instant; /* show the instant that will be used */
    var note = answer.json.shiftedBy ? "dates shifted by " + answer.json.shiftedBy + " so the scenario's instant is now" : "";
    return { serviceId: answer.json.serviceId, request: answer.json.request, instant: instant, note: note };
  }

  async function send(event) {
    event.preventDefault();
    var button = $("send");
    button.disabled = true;
    $("card-list").setAttribute("aria-busy", "true");
    try {
      var built = await buildRequest();
      var body = JSON.stringify(built.request);
      $("request-json").textContent = body.length > 200000
        ? pretty(built.request).slice(0, 200000) + "\n... (" + body.length + " bytes in all)"
        : pretty(built.request);
      var headers = built.instant ? {} : null;
      if (built.instant) headers[data.instantHeader] = built.instant;
      setStatus("Sending " + built.request.hook + " to /cds-services/" + built.serviceId + " ...");
      var answer = await postJson("/cds-services/" + encodeURIComponent(built.serviceId), body, headers);
      lastServiceId = built.serviceId;
      lastRequest = built.request;
      lastInstant = built.instant || "";
      showAnswer(answer, built);
    } catch (error) {
      setStatus(error.message, "error");
    } finally {
      button.disabled = false;
      $("card-list").removeAttribute("aria-busy");
    }
  }

  function showAnswer(answer, built) {
    $("response-json").textContent = answer.json ? pretty(answer.json) : answer.text;
    var where = " (HTTP " + answer.status + ", " + answer.ms + " ms, request id " + answer.requestId + ")";
    if (answer.status === 200) {
      var cards = answer.json.cards || [];
      var at = built.instant ? "evaluated at " + built.instant : "evaluated at the server's current time";
      if (built.note) at += " (" + built.note + ")";
      setStatus(cards.length + " card(s) from " + built.serviceId + ", " + at + where, "ok");
      sidebar.render($("card-list"), cards, built.serviceId);
      return;
    }
    sidebar.render($("card-list"), [], built.serviceId);
    if (answer.status === 401) {
      setStatus("401: this server requires a signed client JWT, which this page does not send. The preview " +
        "needs a server in development mode: `make run` or `cds-service serve --dev`." + where, "error");
    } else {
      setStatus("The service answered " + answer.status + ": " + outcomeText(answer) + where, "error");
    }
  }

  /*
   * The card's SMART link. An EHR would launch it with iss and launch; here, when the server names a running
   * EHR launcher (make stack's /ehr/launch, CDS_PREVIEW_EHR_LAUNCH_URL), the page asks it for a real SMART
   * launch of the card's patient with the card's appContext; otherwise it opens the evidence view: the same
   * evaluation as the hook call just sent, on the dashboard's template, without SMART.
   */
  function openEvidence() {
    if (!lastRequest) { setStatus("Send a request first: the evidence view shows its evaluation.", "error"); return; }
    var form = el("form", { method: "post", action: "/preview/evidence", target: "_blank", hidden: "" });
    [["service", lastServiceId], ["request", JSON.stringify(lastRequest)], ["instant", lastInstant]]
      .forEach(function (field) { form.appendChild(el("input", { type: "hidden", name: field[0], value: field[1] })); });
    document.body.appendChild(form);
    form.submit();
    form.remove();
  }

  function openDashboard(link) {
    if (!data.ehrLaunch) { openEvidence(); return; }
    var patient = null;
    try { patient = JSON.parse(link.appContext || "{}").patient; } catch (e) { patient = null; }
    patient = patient || (lastRequest && lastRequest.context && lastRequest.context.patientId);
    var url = data.ehrLaunch + "?patient=" + encodeURIComponent(patient) + "&launch_uri=" + encodeURIComponent(link.url);
    if (link.appContext) url += "&app_context=" + encodeURIComponent(link.appContext);
    window.open(url, "_blank", "noopener");
  }

  window.CdsPreviewLinks = {
    openDashboard: openDashboard,
    openEvidence: openEvidence,
    describe: function () {
      return data.ehrLaunch
        ? "(SMART launch through the EHR launcher " + data.ehrLaunch + ")"
        : "(no EHR launcher running: opens the evidence view, the same evaluation without SMART)";
    },
  };

  document.querySelectorAll("input[name=source]").forEach(function (input) {
    input.addEventListener("change", function () {
      syncForm();
      /* A scenario's instant must not stick to pasted data: a pasted Bundle brings its own timestamp. */
      if (input.value === "paste") $("instant").value = ""; else onScenarioChange();
    });
  });
  $("hook").addEventListener("change", syncForm);
  $("rebase").addEventListener("change", function () { syncForm(); onScenarioChange(); });
  $("scenario").addEventListener("change", onScenarioChange);
  $("build-form").addEventListener("submit", send);
  syncForm();
  onScenarioChange();
  /* For scripting and tests: the last request sent (the <pre> view is truncated for large requests). */
  window.cdsPreview = {
    lastServiceId: function () { return lastServiceId; },
    lastRequest: function () { return lastRequest; },
  };
})();
