/** The FUSE worker's start data and its messages to the main thread (worker.ts). */
export interface WorkerInit {
  /** /dev/fuse, opened by the main thread (file descriptors are the process's). */
  deviceFd: number;
  fileName: string;
  rawPath: string;
  /** The raw image's name in errors. */
  label: string;
  pages: number;
  /** The chunk checksums (copied to the worker). */
  sums: Uint8Array;
  /** One byte per chunk, 1 once checked; shared with the main thread. */
  verified: SharedArrayBuffer;
  mtimeSec: number;
  maxReadahead: number;
  maxPages: number;
  /** ResponderOptions.requestTimeoutSec. */
  requestTimeoutSec: number;
  /** Tests: answer no READ, as a stalled worker would. */
  stallReads?: boolean;
}

export type WorkerMessage =
  | {
      type: "read";
      /** performance.timeOrigin + performance.now() at the request's arrival. */
      atMs: number;
      serviceUs: number;
      offset: number;
      size: number;
      /** Set when EIO went back instead of the bytes (a damaged chunk). */
      error?: string;
    }
  | { type: "failed"; message: string }
  /** Loaded, waiting for its WorkerInit. */
  | { type: "warm" }
  | { type: "ended" };
