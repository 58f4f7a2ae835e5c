// Colours: one hue per job, shades per label within a job; states for progress bars.

// A categorical palette (Tableau 10 order, slightly deepened for a light background).
const PALETTE: [number, number, number][] = [
  [210, 62, 45], // blue
  [28, 85, 52], // orange
  [140, 45, 40], // green
  [280, 35, 55], // purple
  [15, 35, 42], // brown
  [330, 55, 62], // pink
  [180, 55, 38], // teal
  [50, 75, 45], // olive
  [240, 40, 60], // indigo
  [95, 40, 45], // moss
];

// Shades of a job's hue for its labels (stages), in the order the labels were registered.
const SHADES = [0, 13, -11, 24, -20, 7, -6, 18];
const labelSlots = new Map<number, Map<string, number>>();
const cache = new Map<string, string>();

/** Give a job's labels their shades, sorted the natural way ("stage 2" before "stage 10"). */
export function registerLabels(job: number, labels: Iterable<string>): void {
  let m = labelSlots.get(job);
  if (!m) labelSlots.set(job, (m = new Map()));
  const fresh = [...labels].filter((l) => !m!.has(l)).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  for (const l of fresh) m.set(l, m.size);
}

/** The colour of a task bar: the job picks the hue, the label a shade. */
export function barColor(job: number, label: string): string {
  const key = job + "\u0000" + label;
  let c = cache.get(key);
  if (c) return c;
  const [h, s, l] = PALETTE[((job % PALETTE.length) + PALETTE.length) % PALETTE.length];
  let slot = 0;
  if (label) {
    registerLabels(job, [label]);
    slot = labelSlots.get(job)!.get(label)!;
  }
  c = `hsl(${h} ${s}% ${Math.min(80, Math.max(22, l + SHADES[slot % SHADES.length]))}%)`;
  cache.set(key, c);
  return c;
}

export function jobColor(job: number): string {
  return barColor(job, "");
}

export const FAILED_BAR = "#d11f1f";

export const STATE_COLORS: Record<string, string> = {
  succeeded: "#3a8f4b",
  running: "#3b7dd8",
  failed: "#d13a2f",
  timeout: "#e08a1e",
  cancelled: "#9aa0a8",
  waiting: "transparent",
};

/** Memory use against a bound: calm, warn, danger. */
export function memColor(frac: number): string {
  if (frac >= 0.9) return "#d13a2f";
  if (frac >= 0.75) return "#e0a01e";
  return "#4f83c4";
}
