/**
 * A tiny HTML builder for the web UI: `html\`<p>${value}</p>\`` escapes every interpolation unless it is an
 * {@link Html} fragment (built by `html` itself, or marked with {@link raw} by code that built it safely). Arrays
 * are joined; `null`, `undefined` and `false` render as nothing. Everything that comes from an image or a name
 * (labels, annotations, history, tags) goes through here as text, never as markup.
 */

/** An already-built, trusted HTML fragment. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** What may be interpolated into {@link html}. */
export type HtmlValue = Html | string | number | boolean | null | undefined | HtmlValue[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Escapes text for an HTML text node or a quoted attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c] as string);
}

/** Marks a string as trusted markup. Only for fragments the UI built itself (never for data). */
export function raw(markup: string): Html {
  return new Html(markup);
}

function render(value: HtmlValue): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof Html) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(String(value));
}

/** The tagged template: literal parts are markup, every `${value}` is escaped (see {@link HtmlValue}). */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i] as HtmlValue) + (strings[i + 1] ?? '');
  return new Html(out);
}
