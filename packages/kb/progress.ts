// Progress of a long step (rows and bytes, with a rate and an ETA), one line at most every second,
// to stderr so stdout stays the command's result (and --json stays parseable).
export interface ProgressSink {
  (line: string): void;
}

export class Progress {
  private rows = 0;
  private bytes = 0;
  private readonly started = Date.now();
  private lastPrint = Date.now();

  constructor(
    private readonly label: string,
    private readonly totalRows: number | null,
    private readonly totalBytes: number | null,
    private readonly sink: ProgressSink,
    private readonly everyMs = 1000,
  ) {}

  add(rows: number, bytes: number): void {
    this.rows += rows;
    this.bytes += bytes;
    if (Date.now() - this.lastPrint >= this.everyMs) this.print(false);
  }

  done(): { rows: number; bytes: number; ms: number } {
    this.print(true);
    return { rows: this.rows, bytes: this.bytes, ms: Date.now() - this.started };
  }

  private print(final: boolean): void {
    this.lastPrint = Date.now();
    const s = Math.max((Date.now() - this.started) / 1000, 0.001);
    const rowRate = this.rows / s;
    const parts = [
      `${this.label}: ${fmtInt(this.rows)}${this.totalRows !== null ? `/${fmtInt(this.totalRows)}` : ""} rows`,
    ];
    parts.push(`${fmtBytes(this.bytes)}${this.totalBytes !== null ? `/${fmtBytes(this.totalBytes)}` : ""}`);
    parts.push(`${fmtInt(Math.round(rowRate))} rows/s, ${fmtBytes(this.bytes / s)}/s`);
    if (final) parts.push(`done in ${s.toFixed(1)} s`);
    else {
      const eta = this.totalBytes && this.bytes
        ? (this.totalBytes - this.bytes) / (this.bytes / s)
        : this.totalRows && rowRate
        ? (this.totalRows - this.rows) / rowRate
        : null;
      parts.push(`ETA ${eta === null ? "?" : `${Math.max(0, eta).toFixed(0)} s`}`);
    }
    this.sink(parts.join(", "));
  }
}

export const fmtInt = (n: number) => n.toLocaleString("en-US");

export function fmtBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
