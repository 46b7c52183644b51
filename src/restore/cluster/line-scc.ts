/**
 * Strongly connected components (Tarjan, 1972), iterative so that a 100,000-node chain does not
 * overflow the call stack. Nodes are 0..n-1, `successors[v]` lists v's out-neighbours.
 *
 * Components come out in reverse topological order of the condensation: a component is emitted
 * only after every component reachable from it, so every edge between two components goes from a
 * later component to an earlier one (sinks first). The output depends only on the node numbering
 * and on the order of each successor list, so a sorted input gives a deterministic output.
 * O(V + E) time and memory.
 */
export function stronglyConnectedComponents(
  nodeCount: number,
  successors: readonly (readonly number[])[],
): number[][] {
  const UNVISITED = -1;
  const order = new Int32Array(nodeCount).fill(UNVISITED);
  const lowLink = new Int32Array(nodeCount);
  const onStack = new Uint8Array(nodeCount);
  const nextEdge = new Int32Array(nodeCount);
  const sccStack: number[] = [];
  const callStack: number[] = [];
  const components: number[][] = [];
  let counter = 0;

  const visit = (node: number): void => {
    order[node] = counter;
    lowLink[node] = counter;
    counter += 1;
    onStack[node] = 1;
    sccStack.push(node);
    callStack.push(node);
  };

  for (let root = 0; root < nodeCount; root += 1) {
    if (order[root] !== UNVISITED) continue;
    visit(root);
    while (callStack.length > 0) {
      const node = callStack[callStack.length - 1] ?? 0;
      const out = successors[node] ?? [];
      const edge = nextEdge[node] ?? 0;
      if (edge < out.length) {
        nextEdge[node] = edge + 1;
        const next = out[edge] ?? 0;
        if (order[next] === UNVISITED) {
          visit(next);
        } else if (onStack[next] === 1) {
          lowLink[node] = Math.min(lowLink[node] ?? 0, order[next] ?? 0);
        }
        continue;
      }
      callStack.pop();
      const parent = callStack[callStack.length - 1];
      if (parent !== undefined) lowLink[parent] = Math.min(lowLink[parent] ?? 0, lowLink[node] ?? 0);
      if (lowLink[node] === order[node]) components.push(popComponent(sccStack, onStack, node));
    }
  }
  return components;
}

function popComponent(sccStack: number[], onStack: Uint8Array, root: number): number[] {
  const members: number[] = [];
  for (;;) {
    const member = sccStack.pop();
    if (member === undefined) break;
    onStack[member] = 0;
    members.push(member);
    if (member === root) break;
  }
  return members;
}
