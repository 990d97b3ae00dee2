/*
 * A small, safe Markdown renderer for CDS card details (the GitHub-flavoured subset the cards use).
 *
 * Blocks: ATX headings, paragraphs, bullet and ordered lists (nested by indentation), GFM tables.
 * Inline: **bold**, *emphasis*, `code`, [links](https://...), backslash escapes, HTML entities.
 *
 * Safety: the output is built with DOM nodes and text nodes only (never innerHTML), so raw HTML in the
 * input is shown as text, never interpreted. Links are kept only for http(s) URLs and open in a new tab
 * without a referrer or an opener.
 */
(function (global) {
  "use strict";

  var NAMED_ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };
  var PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  var TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;
  var LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  var HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;

  function decodeEntity(name) {
    if (name.charAt(0) === "#") {
      var hex = name.charAt(1) === "x" || name.charAt(1) === "X";
      var code = parseInt(name.slice(hex ? 2 : 1), hex ? 16 : 10);
      return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : null;
    }
    return Object.prototype.hasOwnProperty.call(NAMED_ENTITIES, name) ? NAMED_ENTITIES[name] : null;
  }

  /* Index of the next unescaped `marker` in `text` at or after `from`, or -1. */
  function findClosing(text, marker, from) {
    for (var i = from; i < text.length; i++) {
      if (text.charAt(i) === "\\") { i++; continue; }
      if (text.substr(i, marker.length) === marker) return i;
    }
    return -1;
  }

  function safeUrl(url) {
    return /^https?:\/\/[^\s]+$/i.test(url) ? url : null;
  }

  /* Append the inline content of `text` to `parent`. */
  function renderInline(text, parent) {
    var buffer = "";
    function flush() {
      if (buffer) { parent.appendChild(document.createTextNode(buffer)); buffer = ""; }
    }
    var i = 0;
    while (i < text.length) {
      var ch = text.charAt(i);
      if (ch === "\\" && i + 1 < text.length && PUNCTUATION.indexOf(text.charAt(i + 1)) >= 0) {
        buffer += text.charAt(i + 1); i += 2; continue;
      }
      if (ch === "&") {
        var entity = /^&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,8});/.exec(text.slice(i));
        var decoded = entity && decodeEntity(entity[1]);
        if (decoded !== null && decoded !== undefined) { buffer += decoded; i += entity[0].length; continue; }
      }
      if (ch === "`") {
        var endCode = text.indexOf("`", i + 1);
        if (endCode > i) {
          flush();
          var code = document.createElement("code");
          code.textContent = text.slice(i + 1, endCode);
          parent.appendChild(code);
          i = endCode + 1; continue;
        }
      }
      if (text.substr(i, 2) === "**") {
        var endStrong = findClosing(text, "**", i + 2);
        if (endStrong > i + 2) {
          flush();
          var strong = document.createElement("strong");
          renderInline(text.slice(i + 2, endStrong), strong);
          parent.appendChild(strong);
          i = endStrong + 2; continue;
        }
      }
      if ((ch === "*" || ch === "_") && i + 1 < text.length && text.charAt(i + 1) !== " ") {
        var endEm = findClosing(text, ch, i + 1);
        if (endEm > i + 1) {
          flush();
          var em = document.createElement("em");
          renderInline(text.slice(i + 1, endEm), em);
          parent.appendChild(em);
          i = endEm + 1; continue;
        }
      }
      if (ch === "[") {
        var link = /^\[([^\]]*)\]\(([^)\s]*)\)/.exec(text.slice(i));
        if (link) {
          flush();
          var url = safeUrl(link[2]);
          if (url) {
            var a = document.createElement("a");
            a.href = url;
            a.target = "_blank";
            a.rel = "noopener noreferrer";
            renderInline(link[1], a);
            parent.appendChild(a);
          } else {
            renderInline(link[1], parent); /* not a safe URL: keep the label only */
          }
          i += link[0].length; continue;
        }
      }
      buffer += ch; i++;
    }
    flush();
  }

  /* Split a table row on unescaped pipes, without the outer ones. */
  function splitRow(line) {
    var cells = [], cell = "", text = line.trim();
    if (text.charAt(0) === "|") text = text.slice(1);
    if (text.charAt(text.length - 1) === "|" && text.charAt(text.length - 2) !== "\\") text = text.slice(0, -1);
    for (var i = 0; i < text.length; i++) {
      var ch = text.charAt(i);
      if (ch === "\\" && text.charAt(i + 1) === "|") { cell += "\\|"; i++; continue; }
      if (ch === "|") { cells.push(cell.trim()); cell = ""; continue; }
      cell += ch;
    }
    cells.push(cell.trim());
    return cells;
  }

  function renderTable(lines, start, parent) {
    var table = document.createElement("table");
    var head = table.createTHead().insertRow();
    var columns = splitRow(lines[start]);
    columns.forEach(function (text) {
      var th = document.createElement("th");
      th.scope = "col";
      renderInline(text, th);
      head.appendChild(th);
    });
    var body = table.createTBody();
    var i = start + 2;
    for (; i < lines.length && lines[i].trim().charAt(0) === "|"; i++) {
      var row = body.insertRow();
      var cells = splitRow(lines[i]);
      for (var c = 0; c < columns.length; c++) renderInline(cells[c] || "", row.insertCell());
    }
    var wrapper = document.createElement("div");
    wrapper.className = "md-table";
    wrapper.appendChild(table);
    parent.appendChild(wrapper);
    return i;
  }

  function renderList(lines, start, parent) {
    var first = LIST_ITEM.exec(lines[start]);
    var indent = first[1].length;
    var ordered = /\d/.test(first[2].charAt(0));
    var list = document.createElement(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
    var i = start, item = null;
    while (i < lines.length && lines[i].trim() !== "" && !HEADING.test(lines[i])) {
      var match = LIST_ITEM.exec(lines[i]);
      var depth = match ? match[1].length : lines[i].search(/\S/);
      if (depth < indent) break;
      if (match && depth > indent && item) { i = renderList(lines, i, item); continue; }
      if (match && depth === indent) {
        item = document.createElement("li");
        renderInline(match[3], item);
        list.appendChild(item);
      } else if (item) {
        item.appendChild(document.createTextNode(" "));
        renderInline(lines[i].trim(), item); /* a continuation line */
      }
      i++;
    }
    parent.appendChild(list);
    return i;
  }

  /*
   * Render `markdown` into a DocumentFragment. `headingOffset` shifts heading levels (a card summary is
   * an h3, so "###" in its detail becomes an h4 with an offset of 1); levels stop at h6.
   */
  function render(markdown, headingOffset) {
    var fragment = document.createDocumentFragment();
    var lines = String(markdown || "").replace(/\r\n?/g, "\n").split("\n");
    var offset = headingOffset || 0;
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      if (line.trim() === "") { i++; continue; }
      var heading = HEADING.exec(line);
      if (heading) {
        var h = document.createElement("h" + Math.min(6, heading[1].length + offset));
        renderInline(heading[2], h);
        fragment.appendChild(h);
        i++; continue;
      }
      if (line.trim().charAt(0) === "|" && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
        i = renderTable(lines, i, fragment); continue;
      }
      if (LIST_ITEM.test(line)) { i = renderList(lines, i, fragment); continue; }
      var paragraph = [];
      while (i < lines.length && lines[i].trim() !== "" && !HEADING.test(lines[i]) && !LIST_ITEM.test(lines[i])) {
        paragraph.push(lines[i].trim()); i++;
      }
      var p = document.createElement("p");
      renderInline(paragraph.join(" "), p);
      fragment.appendChild(p);
    }
    return fragment;
  }

  global.CdsMarkdown = { render: render, renderInline: renderInline };
})(window);
