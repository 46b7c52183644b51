/**
 * Jobs of the HTTP face: every action posted runs as a job with an id; its progress notes and its
 * end (result or error) are kept (the last MAX_JOBS) and published to listeners (the SSE stream).
 */
import { EventEmitter } from "node:events";
import type { Action, Progress } from "../control/actions.ts";
import type { WireError } from "../control/wire.ts";
import { isHrError, messageOf } from "../util/errors.ts";

export const MAX_JOBS = 100;
export const MAX_NOTES = 500;

export type JobState = "running" | "done" | "failed";

export interface Job {
  id: number;
  action: Action;
  state: JobState;
  startedAt: string;
  endedAt: string | null;
  progress: Progress[];
  result?: unknown;
  error?: WireError;
}

export type JobEvent =
  { type: "job"; job: Omit<Job, "progress"> } | { type: "progress"; id: number; note: Progress };

export type Runner = (action: Action, progress: (note: Progress) => void) => Promise<unknown>;

export class Jobs {
  readonly #jobs = new Map<number, Job>();
  readonly #events = new EventEmitter();
  #next = 1;

  constructor(private readonly run: Runner) {
    this.#events.setMaxListeners(0);
  }

  get(id: number): Job | undefined {
    return this.#jobs.get(id);
  }

  list(): Job[] {
    return [...this.#jobs.values()].reverse();
  }

  subscribe(listener: (event: JobEvent) => void): () => void {
    this.#events.on("event", listener);
    return () => this.#events.off("event", listener);
  }

  /** Starts the action; returns the job at once and its end as a promise. */
  start(action: Action): { job: Job; ended: Promise<Job> } {
    const job: Job = {
      id: this.#next++,
      action,
      state: "running",
      startedAt: new Date().toISOString(),
      endedAt: null,
      progress: [],
    };
    this.#jobs.set(job.id, job);
    for (const id of this.#jobs.keys()) {
      if (this.#jobs.size <= MAX_JOBS) break;
      if (this.#jobs.get(id)?.state !== "running") this.#jobs.delete(id);
    }
    this.#emit({ type: "job", job: summary(job) });
    const ended = this.run(action, (note) => {
      if (job.progress.length < MAX_NOTES) job.progress.push(note);
      this.#emit({ type: "progress", id: job.id, note });
    }).then(
      (result) => {
        job.state = "done";
        job.result = result;
      },
      (error: unknown) => {
        job.state = "failed";
        job.error = isHrError(error)
          ? error.toJSON()
          : { code: "INTERNAL", message: messageOf(error), hint: "see the daemon log" };
      },
    );
    return {
      job,
      ended: ended.then(() => {
        job.endedAt = new Date().toISOString();
        this.#emit({ type: "job", job: summary(job) });
        return job;
      }),
    };
  }

  #emit(event: JobEvent): void {
    this.#events.emit("event", event);
  }
}

function summary(job: Job): Omit<Job, "progress"> {
  const { progress: _progress, ...rest } = job;
  return rest;
}
