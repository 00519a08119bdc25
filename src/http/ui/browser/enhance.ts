/**
 * Progressive enhancement for berth's web UI (served as `/ui/assets/ui.js`; every page works without it):
 * copy-to-clipboard buttons, a confirmation dialog before a delete (the link otherwise leads to a confirmation page),
 * filter-as-you-type on the repository list, and relative times kept current.
 */

function relative(iso: string, now: number): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  const abs = Math.abs(s);
  const units: Array<[number, number, string]> = [
    [60, 1, 'second'],
    [3600, 60, 'minute'],
    [86_400, 3600, 'hour'],
    [2_592_000, 86_400, 'day'],
    [31_536_000, 2_592_000, 'month'],
    [Infinity, 31_536_000, 'year'],
  ];
  if (abs < 10) return 'just now';
  for (const [limit, div, name] of units) {
    if (abs < limit) {
      const n = Math.floor(abs / div);
      const unit = `${name}${n === 1 ? '' : 's'}`;
      return s >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
    }
  }
  return iso;
}

function refreshTimes(root: ParentNode): void {
  const now = Date.now();
  root.querySelectorAll<HTMLTimeElement>('time[datetime]').forEach((el) => {
    el.textContent = relative(el.dateTime, now);
  });
}

function enableCopy(root: ParentNode): void {
  root.querySelectorAll<HTMLButtonElement>('button.copy[data-copy]').forEach((button) => {
    button.hidden = false;
    if (button.dataset.bound === '1') return;
    button.dataset.bound = '1';
    button.addEventListener('click', () => {
      const text = button.dataset.copy ?? '';
      const done = (label: string) => {
        button.textContent = label;
        window.setTimeout(() => (button.textContent = 'Copy'), 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          () => done('Copied'),
          () => done('Copy failed'),
        );
      } else {
        const area = document.createElement('textarea');
        area.value = text;
        area.setAttribute('readonly', '');
        area.className = 'offscreen';
        document.body.append(area);
        area.select();
        const ok = document.execCommand('copy');
        area.remove();
        done(ok ? 'Copied' : 'Copy failed');
      }
    });
  });
}

/** A link with `data-confirm` asks first, then posts the delete form itself (no confirmation page). */
function enableConfirm(): void {
  document.addEventListener('click', (event) => {
    const target = event.target instanceof Element ? event.target.closest<HTMLAnchorElement>('a[data-confirm]') : null;
    if (!target) return;
    event.preventDefault();
    if (!window.confirm(target.dataset.confirm ?? 'Are you sure?')) return;
    const form = document.createElement('form');
    form.method = 'post';
    form.action = target.dataset.action ?? target.href;
    for (const [key, value] of Object.entries(target.dataset)) {
      if (!key.startsWith('field')) continue;
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = key.slice('field'.length).toLowerCase();
      input.value = value ?? '';
      form.append(input);
    }
    document.body.append(form);
    form.submit();
  });
}

/** The repository filter updates the list as the user types (the form still works by submitting). */
function enableFilter(): void {
  const input = document.querySelector<HTMLInputElement>('input[data-filter]');
  const list = document.getElementById('repo-list');
  if (!input || !list) return;
  let timer: number | undefined;
  let seq = 0;
  input.addEventListener('input', () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(async () => {
      const mine = ++seq;
      const url = new URL(window.location.href);
      url.search = '';
      if (input.value) url.searchParams.set('q', input.value);
      const response = await fetch(url, { headers: { Accept: 'text/html' }, credentials: 'same-origin' });
      if (!response.ok || mine !== seq) return;
      const doc = new DOMParser().parseFromString(await response.text(), 'text/html');
      const fresh = doc.getElementById('repo-list');
      if (!fresh || mine !== seq) return;
      list.replaceChildren(...Array.from(fresh.childNodes));
      refreshTimes(list);
      window.history.replaceState(null, '', url);
    }, 200);
  });
}

refreshTimes(document);
enableCopy(document);
enableConfirm();
enableFilter();
window.setInterval(() => refreshTimes(document), 30_000);
