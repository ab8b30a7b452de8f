// Click a column header to sort its table by that column; click again to reverse. Numbers
// (including an interval's lower bound, "[-0.03, ...]") sort as numbers, blanks last. Plain
// script, no library and no network: the report stays one self-contained file.
(function () {
  function key(cell) {
    var text = cell ? cell.textContent.trim() : "";
    var number = parseFloat(text.replace(/^\[/, ""));
    return { text: text, number: isFinite(number) ? number : null };
  }
  function compare(a, b) {
    if (a.text === "" || b.text === "") return (a.text === "") - (b.text === "");
    if (a.number !== null && b.number !== null) return a.number - b.number;
    if (a.number !== null || b.number !== null) return a.number === null ? 1 : -1;
    return a.text.localeCompare(b.text, undefined, { numeric: true });
  }
  function sortBy(table, header, column) {
    var body = table.tBodies[0];
    var direction = header.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) { return direction * compare(key(r.cells[column]), key(s.cells[column])); });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("thead th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
  }
  document.querySelectorAll("table").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var headers = table.tHead.rows[table.tHead.rows.length - 1].cells;
    Array.prototype.forEach.call(headers, function (header, column) {
      header.tabIndex = 0;
      header.title = "sort by this column (click again to reverse)";
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) { if (event.key === "Enter") sortBy(table, header, column); });
    });
  });
})();
