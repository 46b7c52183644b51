/**
 * Progress for the demo's long steps: a cli-progress bar (units done of a total, elapsed time,
 * what happens now) on a terminal; on a pipe (CI logs) one line when a step starts and one when it
 * ends, so logs stay readable.
 */
import cliProgress from "cli-progress";

export interface Step {
  /** Marks `n` more units done (default 1), with what happens now. */
  tick(n?: number, detail?: string): void;
  detail(text: string): void;
}

let active: cliProgress.SingleBar | undefined;

/** Stops any bar on screen (Ctrl-C), so the next line starts clean. */
export function stopBars(): void {
  active?.stop();
  active = undefined;
}

export async function step<T>(
  title: string,
  total: number,
  work: (step: Step) => Promise<T>,
  out: NodeJS.WriteStream = process.stdout,
): Promise<T> {
  const started = performance.now();
  const elapsed = (): string => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  if (!out.isTTY) {
    out.write(`${title} …\n`);
    const result = await work({ tick: () => undefined, detail: () => undefined });
    out.write(`${title}: done in ${elapsed()}\n`);
    return result;
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${title.padEnd(44)} [{bar}] {value}/{total} {elapsed} {detail}`,
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      stream: out,
      fps: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  active = bar;
  bar.start(total, 0, { detail: "", elapsed: "0.0 s" });
  const timer = setInterval(() => bar.update({ elapsed: elapsed() }), 200);
  let done = 0;
  try {
    const result = await work({
      tick: (n = 1, detail) => {
        done = Math.min(total, done + n);
        bar.update(done, { elapsed: elapsed(), ...(detail === undefined ? {} : { detail }) });
      },
      detail: (text) => bar.update({ detail: text }),
    });
    bar.update(total, { elapsed: elapsed(), detail: "done" });
    return result;
  } finally {
    clearInterval(timer);
    bar.stop();
    active = undefined;
  }
}

/** A bar for a fixed wait, ticking every 100 ms. */
export async function wait(title: string, ms: number): Promise<void> {
  const tenths = Math.ceil(ms / 100);
  await step(title, tenths, async (s) => {
    for (let i = 0; i < tenths; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      s.tick();
    }
  });
}
