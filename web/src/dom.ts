// Tiny DOM helpers: no framework, the tables update cells in place.

type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Record<string, string | number | boolean | null | undefined> | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (attrs) {
    for (const k in attrs) {
      const v = attrs[k];
      if (v == null || v === false) continue;
      if (k === "class") e.className = String(v);
      else if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error("missing #" + id);
  return e as T;
}

/** Set text only when it changed (cheap for big tables). */
export function setText(e: HTMLElement, s: string): void {
  if (e.textContent !== s) e.textContent = s;
}

/** Replace an element's children. */
export function replaceChildren(e: HTMLElement, ...children: Child[]): void {
  e.textContent = "";
  for (const c of children) {
    if (c == null || c === false) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

/** A floating tooltip shared by the canvases. */
export class Tooltip {
  private div: HTMLDivElement;
  constructor() {
    this.div = el("div", { class: "tooltip", role: "tooltip" });
    this.div.hidden = true;
    document.body.appendChild(this.div);
  }
  show(clientX: number, clientY: number, lines: [string, string][] | string): void {
    const d = this.div;
    d.textContent = "";
    if (typeof lines === "string") {
      d.textContent = lines;
    } else {
      const t = el("table");
      for (const [k, v] of lines) t.appendChild(el("tr", null, el("th", { text: k }), el("td", { text: v })));
      d.appendChild(t);
    }
    d.hidden = false;
    const pad = 14;
    const w = d.offsetWidth;
    const h = d.offsetHeight;
    let x = clientX + pad;
    let y = clientY + pad;
    if (x + w > window.innerWidth - 4) x = clientX - pad - w;
    if (y + h > window.innerHeight - 4) y = clientY - pad - h;
    d.style.left = Math.max(4, x) + "px";
    d.style.top = Math.max(4, y) + "px";
  }
  hide(): void {
    this.div.hidden = true;
  }
}

/** Size a canvas to its CSS box at the device pixel ratio; returns the 2d context in CSS pixels. */
export function fitCanvas(c: HTMLCanvasElement, cssW: number, cssH: number): CanvasRenderingContext2D {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cssW * dpr));
  const h = Math.max(1, Math.round(cssH * dpr));
  if (c.width !== w) c.width = w;
  if (c.height !== h) c.height = h;
  c.style.width = cssW + "px";
  c.style.height = cssH + "px";
  const ctx = c.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}
