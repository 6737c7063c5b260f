const rows = JSON.parse(document.getElementById('data').textContent);
const keys = ['round', 'table', 'label', 'kept', 'reason'];
const filters = {};
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
// Filters can be preset from the address (report.html?label=major&kept=false), to share a view.
const preset = new URLSearchParams(location.search);
for (const key of keys) {
  const select = document.getElementById('f-' + key);
  const values = [...new Set(rows.map(r => String(r[key])))].sort();
  for (const v of ['(all)', ...values]) select.appendChild(el('option', v));
  if (values.includes(preset.get(key))) select.value = preset.get(key);
  select.addEventListener('change', render);
  filters[key] = select;
}
function cell(r) {
  const td = el('td', null, 'text');
  if (r.diff) {
    for (const [op, text] of r.diff) {
      td.appendChild(op === '=' ? document.createTextNode(text) : el(op === '-' ? 'del' : 'ins', text));
    }
  } else if (r.first !== undefined) {
    for (const [side, text] of [['first', r.first], ['second', r.second]]) {
      const div = el('div', null, r.winner === side ? 'win' : '');
      div.appendChild(el('span', side === 'first' ? 'A: ' : 'B: ', 'muted'));
      div.appendChild(document.createTextNode(text));
      td.appendChild(div);
    }
  } else {
    td.textContent = r.original || '';
  }
  if (r.feedback) { td.appendChild(el('div', 'feedback: ' + r.feedback, 'muted')); }
  return td;
}
function numbers(r) {
  // A benchmark answer: each instruction with its strict verdict (and the loose one where they differ).
  if (r.note) return r.note;  // a judged benchmark's verdict, worded by seftgen
  if (r.checks) {
    return r.checks.map(([id, strict, loose]) => (strict ? '✓ ' : '✗ ') + id + (strict !== loose ? ' (loose ' + (loose ? '✓' : '✗') + ')' : '')).join('; ');
  }
  if (r.probs) return 'P(A first) ' + fmt(r.probs[0]) + ' / P(A second) ' + fmt(r.probs[1]);
  if (r.scores && r.scores.some(s => s !== null)) {
    return 'critic ' + r.scores[0] + ', original ' + r.scores[1] + ', refined ' + r.scores[2];
  }
  return '';
}
function fmt(p) { return p === null || p === undefined ? '-' : Number(p).toFixed(3); }
function render() {
  const body = document.querySelector('#rows tbody');
  body.replaceChildren();
  const shown = rows.filter(r => keys.every(k => filters[k].value === '(all)' || String(r[k]) === filters[k].value));
  for (const r of shown) {
    const tr = el('tr');
    tr.dataset.table = r.table;
    for (const v of [r.round, r.table, r.prompt]) tr.appendChild(el('td', v, 'text'));
    tr.appendChild(cell(r));
    for (const v of [r.label, r.kept, r.reason, numbers(r)]) tr.appendChild(el('td', v));
    body.appendChild(tr);
  }
  document.getElementById('count').textContent = shown.length + ' of ' + rows.length + ' rows';
  document.body.dataset.rendered = String(shown.length);
}
const chart = document.getElementById('chart');
function charted() { document.body.dataset.chart = chart.naturalWidth > 0 ? 'loaded' : 'broken'; }
if (chart && chart.complete) {
  charted();
} else if (chart) {
  chart.addEventListener('load', charted);
  chart.addEventListener('error', charted);
}
render();
