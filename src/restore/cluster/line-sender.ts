import { parseArp } from "../../net/arp.ts";
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from "../../net/ethernet.ts";
import type { Flow, FlowEnd } from "../../net/flows.ts";
import { parseIpv4 } from "../../net/ipv4.ts";

/**
 * Tells a frame's sending VM from its content: its source MAC (when the MAC table is known),
 * else its source IPv4 address (IPv4 header, or the ARP sender address) as the flow table saw
 * it sent from a port. An address seen from two ports is ambiguous and resolves to nothing.
 */
export function senderResolver(
  flows: readonly Flow[],
  macs: readonly { mac: string; vm: string }[],
): (frame: Buffer) => string | undefined {
  let byMac: Map<string, string> | undefined;
  let byIp: Map<string, string | undefined> | undefined;
  const learn = (table: Map<string, string | undefined>, end: FlowEnd): void => {
    if (end.vm === undefined) return;
    const known = table.get(end.ip);
    table.set(end.ip, table.has(end.ip) && known !== end.vm ? undefined : end.vm);
  };
  // Built on first use: most snapshots have few in-flight frames, many have none.
  const ipTable = (): Map<string, string | undefined> => {
    if (byIp !== undefined) return byIp;
    const table = new Map<string, string | undefined>();
    for (const flow of flows) {
      learn(table, flow.a);
      learn(table, flow.b);
    }
    byIp = table;
    return table;
  };
  return (frame) => {
    byMac ??= new Map(macs.map(({ mac, vm }) => [mac.toLowerCase(), vm]));
    const ethernet = parseEthernet(frame);
    if (ethernet === undefined) return undefined;
    const byAddress = byMac.get(ethernet.src);
    if (byAddress !== undefined) return byAddress;
    if (ethernet.etherType === ETHERTYPE_IPV4) {
      const ip = parseIpv4(ethernet.payload);
      return ip === undefined ? undefined : ipTable().get(ip.src);
    }
    if (ethernet.etherType === ETHERTYPE_ARP) {
      const arp = parseArp(ethernet.payload);
      return arp === undefined ? undefined : ipTable().get(arp.senderIp);
    }
    return undefined;
  };
}
