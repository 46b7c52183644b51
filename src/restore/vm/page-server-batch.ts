/**
 * Picks the next background section of the page server: pages from the policy, claimed one by
 * one (a page already picked by a request or an earlier batch is skipped), until the section
 * holds `sectionDataPages` pages with data or `sectionMaxPages` pages in all (zero pages are 9
 * bytes on the wire, so they do not count against the data budget). When the policy has nothing
 * to offer — or offers only pages already taken — the unsent pages are swept in address order,
 * so every page is sent whatever the policy does. A policy's pause is passed on when nothing was
 * picked yet. Pure apart from the page states it claims.
 */
import type { PagePolicy, PolicyPause, PolicyView } from "./page-server-policy.ts";
import type { PageSource } from "./page-server-read.ts";
import type { PageStates } from "./page-server-space.ts";

export interface BackgroundCursor {
  /** Pages the policy offered that are not used yet, and where the next one is. */
  carry: number[];
  at: number;
}

export interface BatchLimits {
  sectionDataPages: number;
  sectionMaxPages: number;
}

export function newCursor(): BackgroundCursor {
  return { carry: [], at: 0 };
}

export function nextBackgroundBatch(
  cursor: BackgroundCursor,
  policy: PagePolicy,
  view: PolicyView,
  states: PageStates,
  memory: Pick<PageSource, "isPresent">,
  limits: BatchLimits,
): number[] | PolicyPause {
  const out: number[] = [];
  let dataPages = 0;
  let usePolicy = true;
  while (out.length < limits.sectionMaxPages && dataPages < limits.sectionDataPages) {
    if (cursor.at >= cursor.carry.length) {
      const offered = usePolicy ? policy.nextBatch(limits.sectionMaxPages, view) : [];
      if (!Array.isArray(offered)) {
        if (out.length > 0) break;
        return offered;
      }
      const fresh = offered.filter((index) => states.isUnsent(index));
      // A policy that offers nothing new (exhausted, or stale) gives way to the sweep for this batch.
      if (fresh.length === 0) usePolicy = false;
      cursor.carry = fresh.length > 0 ? fresh : states.nextUnsent(limits.sectionMaxPages);
      cursor.at = 0;
      if (cursor.carry.length === 0) break;
    }
    const index = cursor.carry[cursor.at]!;
    cursor.at += 1;
    if (!states.claim(index)) continue;
    out.push(index);
    const ref = view.space.refOf(index);
    if (memory.isPresent(ref.blockId, ref.page)) dataPages += 1;
  }
  return out;
}
