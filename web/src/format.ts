// Human-readable numbers, bytes and durations.

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return "–";
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const s = i === 0 || Number.isInteger(v) ? v.toFixed(0) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  return (n < 0 ? "-" : "") + s + " " + BYTE_UNITS[i];
}

export function rate(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return "–";
  return bytes(n) + "/s";
}

const numFormats: Intl.NumberFormat[] = [];

/** A number with thousands separators (the formatter is cached: toLocaleString is slow). */
export function num(n: number | null | undefined, digits = 0): string {
  if (n == null || !isFinite(n)) return "–";
  let f = numFormats[digits];
  if (!f) f = numFormats[digits] = new Intl.NumberFormat("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  return f.format(n);
}

/** A compact count: 1234 -> "1.23k". */
export function si(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toPrecision(3) + "G";
  if (a >= 1e6) return (n / 1e6).toPrecision(3) + "M";
  if (a >= 1e4) return (n / 1e3).toPrecision(3) + "k";
  if (a >= 100 || Number.isInteger(n)) return n.toFixed(0);
  return n.toPrecision(3);
}

/** A duration in seconds: "45.2 s", "3m 05s", "2h 03m", "1d 4h". */
export function dur(s: number | null | undefined): string {
  if (s == null || !isFinite(s)) return "–";
  const neg = s < 0;
  s = Math.abs(s);
  let out: string;
  if (s < 1) out = (s * 1000).toFixed(0) + " ms";
  else if (s < 60) out = s.toFixed(1) + " s";
  else if (s < 3600) out = Math.floor(s / 60) + "m " + pad2(Math.floor(s % 60)) + "s";
  else if (s < 86400) out = Math.floor(s / 3600) + "h " + pad2(Math.floor((s % 3600) / 60)) + "m";
  else out = Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  return neg ? "-" + out : out;
}

function pad2(n: number): string {
  return n < 10 ? "0" + n : String(n);
}

/** Seconds since server start as a clock time, given the server's start in unix seconds. */
export function clock(t: number, startedUnix: number | undefined): string {
  if (!startedUnix) return dur(t);
  const d = new Date((startedUnix + t) * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

export function pct(x: number | null | undefined, digits = 0): string {
  if (x == null || !isFinite(x)) return "–";
  return (x * 100).toFixed(digits) + "%";
}
