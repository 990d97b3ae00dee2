/*
 * Cards as an EHR sidebar shows them: summary, indicator (colour and label), Markdown detail, source,
 * suggestions (a button shows the FHIR resources each would create or delete; accepting one sends
 * feedback), links, and dismissal with the card's override reasons, posted as real CDS Hooks feedback.
 * Server strings only ever become text nodes or go through CdsMarkdown (DOM nodes, never HTML).
 */
(function (global) {
  "use strict";

  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pretty(value) { return JSON.stringify(value, null, 2); }

  async function postJson(url, body, headers) {
    var started = performance.now();
    var response = await fetch(url, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json", Accept: "application/json" }, headers || {}),
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    var text = await response.text();
    var json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    return { status: response.status, json: json, text: text, ms: Math.round(performance.now() - started),
             requestId: response.headers.get("X-Request-Id") };
  }

  function outcomeText(answer) {
    var issues = answer.json && answer.json.issue;
    if (!issues || !issues.length) return answer.text.slice(0, 300);
    return issues.map(function (issue) {
      return issue.diagnostics + (issue.expression ? " (at " + issue.expression.join(", ") + ")" : "");
    }).join("; ");
  }

  function renderCards(list, cards, serviceId) {
    list.textContent = "";
    if (!cards.length) { list.appendChild(el("p", { "class": "empty" }, "No cards.")); return; }
    var order = { critical: 0, warning: 1, info: 2 };
    cards.slice().sort(function (a, b) { return order[a.indicator] - order[b.indicator]; })
      .forEach(function (card, index) { list.appendChild(renderCard(card, index, serviceId)); });
    var first = list.querySelector(".cds-card-summary");
    if (first) first.focus();
  }

  function renderCard(card, index, serviceId) {
    var id = "card-" + index;
    var article = el("article", { "class": "cds-card indicator-" + card.indicator, "aria-labelledby": id + "-summary" });
    article.dataset.indicator = card.indicator;
    var header = el("header", { "class": "cds-card-header" });
    header.appendChild(el("span", { "class": "cds-card-indicator" }, card.indicator));
    header.appendChild(el("h3", { "class": "cds-card-summary", id: id + "-summary", tabindex: "-1" }, card.summary));
    article.appendChild(header);
    article.appendChild(renderSource(card.source));
    if (card.detail) {
      var details = el("details", { "class": "cds-card-detail", open: "" });
      details.appendChild(el("summary", {}, "Details"));
      var body = el("div", { "class": "markdown" });
      body.appendChild(window.CdsMarkdown.render(card.detail, 1));
      details.appendChild(body);
      article.appendChild(details);
    }
    if (card.suggestions) article.appendChild(renderSuggestions(card, serviceId));
    if (card.links) article.appendChild(renderLinks(card.links));
    if (card.uuid) article.appendChild(renderDismiss(card, id, serviceId));
    article.appendChild(el("div", { "class": "feedback-result", role: "status", "aria-live": "polite" }));
    return article;
  }

  function renderSource(source) {
    var p = el("p", { "class": "cds-card-source" }, "Source: ");
    if (source.url && /^https?:\/\//.test(source.url)) {
      p.appendChild(el("a", { href: source.url, target: "_blank", rel: "noopener noreferrer" }, source.label));
    } else {
      p.appendChild(document.createTextNode(source.label));
    }
    return p;
  }

  function renderSuggestions(card, serviceId) {
    var section = el("section", { "class": "cds-card-suggestions" });
    section.appendChild(el("h4", {}, "Suggestions (" + (card.selectionBehavior || "any") + ")"));
    card.suggestions.forEach(function (suggestion) {
      var button = el("button", { type: "button", "class": "suggestion" + (suggestion.isRecommended ? " recommended" : ""),
                                  "aria-expanded": "false" }, suggestion.label);
      var panel = renderActions(card, suggestion, serviceId);
      panel.hidden = true;
      button.addEventListener("click", function () {
        panel.hidden = !panel.hidden;
        button.setAttribute("aria-expanded", String(!panel.hidden));
      });
      section.appendChild(button);
      section.appendChild(panel);
    });
    return section;
  }

  function renderActions(card, suggestion, serviceId) {
    var panel = el("div", { "class": "suggestion-actions" });
    panel.appendChild(el("p", {}, "Accepting this suggestion would make these changes in the EHR:"));
    var list = el("ol", {});
    (suggestion.actions || []).forEach(function (action) {
      var item = el("li", {});
      item.appendChild(el("strong", {}, action.type + ": "));
      item.appendChild(document.createTextNode(action.description));
      if (action.resourceId) item.appendChild(el("p", {}, "Resource: " + action.resourceId));
      if (action.resource) item.appendChild(el("pre", { "class": "fhir-resource" }, pretty(action.resource)));
      list.appendChild(item);
    });
    panel.appendChild(list);
    if (card.uuid && suggestion.uuid) {
      var accept = el("button", { type: "button", "class": "accept" }, "Accept (send feedback)");
      accept.addEventListener("click", function () {
        sendFeedback(accept.closest(".cds-card"), serviceId, {
          card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: suggestion.uuid }],
        });
      });
      panel.appendChild(accept);
    }
    return panel;
  }

  function renderLinks(links) {
    var nav = el("nav", { "class": "cds-card-links", "aria-label": "Card links" });
    var list = el("ul", {});
    var opener = global.CdsPreviewLinks; /* the preview page stands in for the EHR's SMART launcher */
    links.forEach(function (link) {
      var item = el("li", {});
      if (link.type === "smart" && opener) {
        var launch = el("button", { type: "button", "class": "dashboard-link" }, link.label);
        launch.addEventListener("click", function () { opener.openDashboard(link); });
        item.appendChild(launch);
        item.appendChild(el("span", { "class": "hint" }, " " + opener.describe()));
        var evidence = el("button", { type: "button", "class": "evidence-link" }, "Evidence view (no SMART)");
        evidence.addEventListener("click", function () { opener.openEvidence(); });
        item.appendChild(evidence);
      } else if (/^https?:\/\//.test(link.url)) {
        item.appendChild(el("a", { href: link.url, target: "_blank", rel: "noopener noreferrer" }, link.label));
        if (link.type === "smart") item.appendChild(el("span", { "class": "hint" }, " (SMART app: an EHR adds iss and launch)"));
      } else {
        item.appendChild(document.createTextNode(link.label));
      }
      list.appendChild(item);
    });
    nav.appendChild(list);
    return nav;
  }

  function renderDismiss(card, id, serviceId) {
    var wrapper = el("div", { "class": "dismiss" });
    var toggle = el("button", { type: "button", "class": "dismiss-toggle", "aria-expanded": "false" }, "Dismiss…");
    var form = el("form", { "class": "dismiss-form" });
    form.hidden = true;
    var fieldset = el("fieldset", {});
    fieldset.appendChild(el("legend", {}, "Why dismiss this card?"));
    (card.overrideReasons || []).concat([null]).forEach(function (reason, n) {
      var inputId = id + "-reason-" + n;
      var label = el("label", { "for": inputId });
      var input = el("input", { type: "radio", name: id + "-reason", id: inputId, value: String(n) });
      if (n === 0) input.checked = true;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + (reason ? reason.display : "No reason given")));
      fieldset.appendChild(label);
    });
    var commentId = id + "-comment";
    fieldset.appendChild(el("label", { "for": commentId }, "Comment (optional)"));
    fieldset.appendChild(el("textarea", { id: commentId, rows: "2", maxlength: "4000" }));
    form.appendChild(fieldset);
    form.appendChild(el("button", { type: "submit", "class": "dismiss-send" }, "Dismiss and send feedback"));
    toggle.addEventListener("click", function () {
      form.hidden = !form.hidden;
      toggle.setAttribute("aria-expanded", String(!form.hidden));
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var chosen = form.querySelector("input[type=radio]:checked");
      var reason = chosen ? (card.overrideReasons || [])[Number(chosen.value)] : null;
      var item = { card: card.uuid, outcome: "overridden" };
      var comment = form.querySelector("textarea").value.trim();
      if (reason || comment) item.overrideReason = {};
      if (reason) item.overrideReason.reason = { system: reason.system, code: reason.code, display: reason.display };
      if (comment) item.overrideReason.userComment = comment;
      sendFeedback(wrapper.closest(".cds-card"), serviceId, item);
    });
    wrapper.appendChild(toggle);
    wrapper.appendChild(form);
    return wrapper;
  }

  async function sendFeedback(cardNode, serviceId, item) {
    item.outcomeTimestamp = new Date().toISOString();
    var result = cardNode.querySelector(".feedback-result");
    result.textContent = "Sending feedback ...";
    try {
      var answer = await postJson("/cds-services/" + encodeURIComponent(serviceId) + "/feedback", { feedback: [item] });
      result.textContent = "";
      var ok = answer.status === 200;
      result.className = "feedback-result " + (ok ? "ok" : "error");
      result.appendChild(el("p", {}, ok
        ? "Feedback (" + item.outcome + ") sent: the server answered 200."
        : "Feedback failed: HTTP " + answer.status + ": " + outcomeText(answer)));
      result.appendChild(el("pre", { "class": "feedback-answer" }, answer.json ? pretty(answer.json) : answer.text));
      if (ok) cardNode.classList.add(item.outcome === "accepted" ? "accepted" : "dismissed");
    } catch (error) {
      result.textContent = "Feedback failed: " + error.message;
    }
  }

  global.CdsCards = { render: renderCards, el: el, pretty: pretty, postJson: postJson, outcomeText: outcomeText };
})(window);
