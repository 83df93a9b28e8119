// Renders a terminal capture with ANSI colours (`tmux capture-pane -e -p`) to a PNG through headless Chromium,
// for the documentation's Neovim screenshots. Usage: node ansi2png.js capture.ansi out.png [columns]
const { chromium } = require('playwright-core');
const fs = require('fs');

const [input, output, columns] = process.argv.slice(2);
const text = fs.readFileSync(input, 'utf8').replace(/\n$/, '');
const BG = '#14161b', FG = '#e0e2ea';
const base16 = ['#07080d', '#ffc0b9', '#b3f6c0', '#fce094', '#a6dbff', '#ffcaff', '#8cf8f7', '#eef1f8',
  '#4f5258', '#ffc0b9', '#b3f6c0', '#fce094', '#a6dbff', '#ffcaff', '#8cf8f7', '#ffffff'];
function xterm256(n) {
  if (n < 16) return base16[n];
  if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
  n -= 16; const c = (x) => (x ? 55 + x * 40 : 0);
  return `rgb(${c(Math.floor(n / 36))},${c(Math.floor(n / 6) % 6)},${c(n % 6)})`;
}
const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
let st = {};
function style() {
  let fg = st.fg || FG, bg = st.bg || BG;
  if (st.rev) [fg, bg] = [bg, fg];
  return `color:${fg};background:${bg};${st.bold ? 'font-weight:bold;' : ''}${st.it ? 'font-style:italic;' : ''}` +
    `${st.ul ? 'text-decoration:underline;' : ''}`;
}
function sgr(codes) {
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) st = {};
    else if (c === 1) st.bold = true; else if (c === 22) st.bold = false;
    else if (c === 3) st.it = true; else if (c === 23) st.it = false;
    else if (c === 4) st.ul = true; else if (c === 24) st.ul = false;
    else if (c === 7) st.rev = true; else if (c === 27) st.rev = false;
    else if (c >= 30 && c <= 37) st.fg = base16[c - 30]; else if (c === 39) st.fg = undefined;
    else if (c >= 40 && c <= 47) st.bg = base16[c - 40]; else if (c === 49) st.bg = undefined;
    else if (c >= 90 && c <= 97) st.fg = base16[c - 82]; else if (c >= 100 && c <= 107) st.bg = base16[c - 92];
    else if (c === 38 || c === 48) {
      const key = c === 38 ? 'fg' : 'bg';
      if (codes[i + 1] === 5) { st[key] = xterm256(codes[i + 2]); i += 2; }
      else if (codes[i + 1] === 2) { st[key] = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`; i += 4; }
    }
  }
}
let html = '';
for (const line of text.split('\n')) {
  let out = '', last = 0;
  const re = /\x1b\[([0-9;:]*)m/g;
  let m;
  while ((m = re.exec(line))) {
    if (m.index > last) out += `<span style="${style()}">${esc(line.slice(last, m.index))}</span>`;
    sgr(m[1] === '' ? [0] : m[1].split(/[;:]/).map(Number));
    last = re.lastIndex;
  }
  out += `<span style="${style()}">${esc(line.slice(last))}</span>`;
  html += `<div class="l">${out}</div>`;
}
const page = `<html><body style="margin:0;background:${BG}"><pre id="t" style="margin:0;padding:8px;display:inline-block;
  font:14px/1.3 'DejaVu Sans Mono',monospace;min-width:${Number(columns) || 0}ch;color:${FG};background:${BG}">${html}</pre>
  <style>.l{white-space:pre;min-height:1.3em}</style></body></html>`;
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'] });
  const p = await browser.newPage();
  await p.setContent(page);
  await p.locator('#t').screenshot({ path: output });
  await browser.close();
})();
