#!/usr/bin/env node
// Entry shim: runs the TypeScript CLI through tsx's loader (no build step, nothing compiled in git).
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
