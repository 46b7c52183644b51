/**
 * What the page servers tell whoever listens (node:diagnostics_channel: free when nobody does).
 * The daemon forwards them to its supervisor, so that a wedged daemon is reported naming the VMs
 * whose pages were still being served, and logs injected faults (util/faults.ts).
 */
import diagnosticsChannel from "node:diagnostics_channel";

export type PageServerEvent =
  { vm: string; state: "serving" | "ended" } | { vm: string; state: "fault"; fault: string; point: string };

export const PAGE_SERVER_CHANNEL = "hotrestore:page-server";

const channel = diagnosticsChannel.channel(PAGE_SERVER_CHANNEL);

export function publishPageServer(event: PageServerEvent): void {
  if (channel.hasSubscribers) channel.publish(event);
}

export function onPageServer(listener: (event: PageServerEvent) => void): void {
  diagnosticsChannel.subscribe(PAGE_SERVER_CHANNEL, (message) => listener(message as PageServerEvent));
}
