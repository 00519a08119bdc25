/**
 * The web UI's one stylesheet, served as `/ui/assets/ui.css`: system fonts, light and dark (`prefers-color-scheme`),
 * readable down to a phone's width (tables scroll inside their box), visible focus outlines.
 */
export const STYLESHEET = `
:root {
  color-scheme: light dark;
  --bg: #ffffff; --fg: #1b1f24; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --accent: #0b5cad; --accent-fg: #ffffff; --danger: #b42318; --ok: #1a7f37; --focus: #f59e0b;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1419; --fg: #e6edf3; --muted: #9aa5b1; --line: #30363d; --soft: #161b22;
    --accent: #58a6ff; --accent-fg: #0f1419; --danger: #ff7b72; --ok: #3fb950;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
time { white-space: nowrap; }
html { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; font-size: 16px; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.5; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.9em; }
a { color: var(--accent); }
a:hover { text-decoration-thickness: 2px; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; border-radius: 2px; }
.skip { position: absolute; left: -9999px; top: 0; background: var(--accent); color: var(--accent-fg); padding: 0.5rem 1rem; z-index: 10; }
.skip:focus { left: 0.5rem; top: 0.5rem; }
header.top { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 1.5rem; padding: 0.75rem 1.25rem; border-bottom: 1px solid var(--line); background: var(--soft); }
header.top .brand { font-weight: 700; font-size: 1.15rem; color: var(--fg); text-decoration: none; }
header.top nav ul { display: flex; flex-wrap: wrap; gap: 1rem; list-style: none; margin: 0; padding: 0; }
header.top .who { margin-left: auto; display: flex; gap: 0.75rem; align-items: center; color: var(--muted); }
main { max-width: 72rem; margin: 0 auto; padding: 1.25rem; }
h1 { font-size: 1.5rem; margin: 0.25rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.75rem 0 0.5rem; }
.crumbs { color: var(--muted); font-size: 0.9rem; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.45rem 0.75rem; border-bottom: 1px solid var(--line); vertical-align: top; }
tr:last-child td { border-bottom: 0; }
th { background: var(--soft); font-weight: 600; font-size: 0.9rem; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.name { overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.3rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
pre.block { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 0.6rem 0.75rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.pull { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem; margin: 0.25rem 0; }
.pull code { background: var(--soft); border: 1px solid var(--line); border-radius: 4px; padding: 0.15rem 0.4rem; overflow-wrap: anywhere; }
form.inline { display: inline; }
form.filter { display: flex; flex-wrap: wrap; gap: 0.5rem; margin: 0 0 1rem; }
input[type=search], input[type=text], input[type=password] { font: inherit; padding: 0.4rem 0.6rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); min-width: 0; }
form.filter input[type=search] { flex: 1 1 16rem; }
button, .button { font: inherit; font-size: 0.9rem; padding: 0.35rem 0.8rem; border-radius: 6px; border: 1px solid var(--line); background: var(--soft); color: var(--fg); cursor: pointer; text-decoration: none; display: inline-block; }
button.primary, .button.primary { background: var(--accent); color: var(--accent-fg); border-color: var(--accent); }
button.danger, .button.danger { color: var(--danger); border-color: var(--danger); background: transparent; }
button.danger.solid { background: var(--danger); color: var(--bg); }
button.copy { font-size: 0.8rem; padding: 0.1rem 0.5rem; }
.pager { display: flex; gap: 1rem; margin: 1rem 0; }
.notice { border: 1px solid var(--line); border-left: 4px solid var(--accent); background: var(--soft); padding: 0.6rem 0.9rem; border-radius: 4px; margin: 0 0 1rem; }
.notice.error { border-left-color: var(--danger); }
.notice.ok { border-left-color: var(--ok); }
.login { max-width: 22rem; margin: 2rem auto; display: grid; gap: 0.75rem; }
.login label { display: grid; gap: 0.25rem; }
.tag { display: inline-block; font-size: 0.8rem; padding: 0 0.4rem; border: 1px solid var(--line); border-radius: 999px; margin: 0 0.2rem 0.2rem 0; white-space: nowrap; }
.switch { margin: 0 0 0.75rem; }
.offscreen { position: fixed; left: -9999px; top: 0; }
@media (max-width: 40rem) {
  html { font-size: 15px; }
  main { padding: 0.75rem; }
  th, td { padding: 0.4rem 0.5rem; }
  .hide-narrow { display: none; }
  header.top .who { margin-left: 0; }
}
`;
