/**
 * Runs tests/cpu_heap_train.ts in a runtime without SharedArrayBuffer (like a browser page that
 * is not cross-origin isolated), so the CPU heap is a non-shared memory whose growth detaches
 * its old buffer; prints the result as JSON. Spawned by cpu_heap_test.ts.
 */
delete (globalThis as { SharedArrayBuffer?: unknown }).SharedArrayBuffer;
const { trainLosses } = await import("./cpu_heap_train.ts");
const first = await trainLosses(); // also warms up what lives as long as the process
const second = await trainLosses();
console.log(JSON.stringify({ ...second, firstLosses: first.losses }));
