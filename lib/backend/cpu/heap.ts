/**
 * The CPU heap: one `WebAssembly.Memory` that holds every CPU tensor, so that WebAssembly
 * kernels and worker threads read and write tensors in place.
 *
 * - The memory is shared (`shared: true`, with a maximum) when `SharedArrayBuffer` exists, and a
 *   plain growable memory otherwise (e.g. a browser page without cross-origin isolation).
 * - Blocks are 64-byte aligned. Requests up to 256 KiB round up to a size class (64, 128, 192,
 *   256 bytes, then four classes per power of two, so at most 25% is lost) served from a free
 *   list per class; larger requests round up to 4 KiB and are served best-fit from a list of free
 *   ranges that coalesce with their neighbours (and give the top of the heap back).
 * - The memory grows with `memory.grow` (by at least half its size) and never shrinks. Growing a
 *   non-shared memory detaches its old `ArrayBuffer`, and a shared memory's old buffer does not
 *   see the grown part. So never keep a typed array over the heap across an allocation: derive
 *   views from {@linkcode Heap.buffer} (or {@linkcode heapBuffer}) after the last allocation of a
 *   kernel call. Only the heap itself grows the memory.
 *
 * Address 0 is never handed out.
 *
 * @module
 */

const PAGE = 65536;
/** Alignment (bytes) of every block. */
export const HEAP_ALIGN = 64;
/** Largest request served by the size classes; larger ones use the range allocator. */
export const SMALL_MAX = 256 * 1024;
const LARGE_GRAIN = 4096;
/** The most pages a wasm32 memory can have (4 GiB). */
const MAX_PAGES = 65536;

/** Options of a {@linkcode Heap}. */
export interface HeapOptions {
  /** A shared memory (default: whether `SharedArrayBuffer` exists). */
  readonly shared?: boolean;
  /** Initial size in bytes (default 1 MiB), rounded up to 64 KiB pages. */
  readonly initialBytes?: number;
  /** Maximum size in bytes (default and limit 4 GiB), rounded up to 64 KiB pages. */
  readonly maximumBytes?: number;
}

/** Counters of a heap. */
export interface HeapStats {
  /** Whether the memory is shared. */
  readonly shared: boolean;
  /** Bytes in live blocks (block sizes, i.e. requests rounded up to their class). */
  readonly liveBytes: number;
  /** Live blocks. */
  readonly liveBlocks: number;
  /** Bytes the allocator has carved out of the memory: live blocks plus cached free ones. */
  readonly reservedBytes: number;
  /** Bytes in free blocks and ranges, ready for reuse (`reservedBytes - liveBytes`). */
  readonly cachedBytes: number;
  /** Size of the memory in bytes. */
  readonly memoryBytes: number;
  /** Maximum size of the memory in bytes. */
  readonly maximumBytes: number;
  /** Number of `alloc` calls so far. */
  readonly allocs: number;
  /** Block bytes handed out by `alloc` so far (reused blocks count again). */
  readonly allocatedBytes: number;
  /** Number of `release` calls so far. */
  readonly releases: number;
  /** Number of times the memory grew. */
  readonly grows: number;
}

/** Block size of a request of `bytes` (its size class, or 4 KiB granules above 256 KiB). */
export function blockBytes(bytes: number): number {
  if (bytes <= 256) return bytes <= 64 ? 64 : Math.ceil(bytes / 64) * 64;
  if (bytes > SMALL_MAX) return Math.ceil(bytes / LARGE_GRAIN) * LARGE_GRAIN;
  const k = 31 - Math.clz32(bytes - 1); // 2^k < bytes ≤ 2^(k+1)
  const step = 2 ** (k - 2);
  return Math.ceil(bytes / step) * step;
}

/** Index of the size class of a block size ≤ SMALL_MAX. */
function classIndex(block: number): number {
  if (block <= 256) return block / 64 - 1;
  const k = 31 - Math.clz32(block - 1);
  return 4 + (k - 8) * 4 + (block / 2 ** (k - 2) - 5);
}

interface Range {
  ptr: number;
  bytes: number;
}

/**
 * A `WebAssembly.Memory` with a size-class allocator. The CPU backend uses one default heap
 * ({@linkcode defaultHeap}); tests make others to exercise both memory modes.
 *
 * @example
 * ```ts
 * const heap = new Heap({ shared: false });
 * const p = heap.alloc(1000); // a 64-aligned byte offset
 * new Float32Array(heap.buffer, p, 250).fill(1);
 * heap.release(p, 1000);
 * ```
 */
export class Heap {
  /** The memory that holds every block. */
  readonly memory: WebAssembly.Memory;
  /** Whether the memory is shared. */
  readonly shared: boolean;
  readonly #maxPages: number;
  #buffer: ArrayBuffer | SharedArrayBuffer;
  #size: number;
  #top = HEAP_ALIGN;
  readonly #small: number[][] = [];
  readonly #large: Range[] = []; // free ranges sorted by address, never touching #top
  readonly #live = new Map<number, number>(); // ptr → block bytes
  #liveBytes = 0;
  #allocs = 0;
  #allocated = 0;
  #releases = 0;
  #grows = 0;

  /** A new heap (see {@linkcode HeapOptions}). */
  constructor(opts: HeapOptions = {}) {
    const canShare = typeof SharedArrayBuffer === "function";
    const shared = opts.shared ?? canShare;
    if (shared && !canShare) {
      throw new Error(
        "Heap: a shared memory needs SharedArrayBuffer, which this runtime lacks (a browser page " +
          "needs cross-origin isolation); pass { shared: false }",
      );
    }
    const pages = (b: number | undefined, dflt: number, name: string) => {
      if (b === undefined) return dflt;
      if (!(Number.isFinite(b) && b >= 0)) {
        throw new RangeError(`Heap: ${name} must be a non-negative number of bytes, got ${b}`);
      }
      return Math.min(MAX_PAGES, Math.max(1, Math.ceil(b / PAGE)));
    };
    this.#maxPages = pages(opts.maximumBytes, MAX_PAGES, "maximumBytes");
    const initial = Math.min(this.#maxPages, pages(opts.initialBytes, 16, "initialBytes"));
    this.memory = new WebAssembly.Memory(
      shared
        ? { initial, maximum: this.#maxPages, shared: true }
        : { initial, maximum: this.#maxPages },
    );
    this.shared = shared;
    this.#buffer = this.memory.buffer;
    this.#size = this.#buffer.byteLength;
  }

  /**
   * The memory's current buffer. Valid until the next allocation that grows the memory: take it
   * after a kernel's last `alloc`, and never keep views over it across kernel calls.
   */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    return this.#buffer;
  }

  /** A 64-byte aligned block of at least `bytes` bytes (contents undefined); its byte offset. */
  alloc(bytes: number): number {
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) {
      throw new TypeError(`alloc: bytes must be a non-negative integer, got ${bytes}`);
    }
    const block = blockBytes(bytes);
    let ptr: number;
    if (block <= SMALL_MAX) {
      const list = this.#small[classIndex(block)];
      ptr = list !== undefined && list.length > 0 ? list.pop()! : this.#carve(block);
    } else ptr = this.#allocLarge(block);
    this.#live.set(ptr, block);
    this.#liveBytes += block;
    this.#allocs++;
    this.#allocated += block;
    return ptr;
  }

  /** Return the block at `ptr` (from `alloc(bytes)`, with the same `bytes`) to the heap. */
  release(ptr: number, bytes: number): void {
    const block = this.#live.get(ptr);
    if (block === undefined) {
      throw new Error(`release: ${ptr} is not a live block of this heap (released twice?)`);
    }
    if (blockBytes(bytes) !== block) {
      throw new Error(
        `release: the block at ${ptr} was allocated for ${block} bytes, released as ${bytes}; ` +
          "pass the byte count given to alloc",
      );
    }
    this.#live.delete(ptr);
    this.#liveBytes -= block;
    this.#releases++;
    if (block <= SMALL_MAX) (this.#small[classIndex(block)] ??= []).push(ptr);
    else this.#freeLarge(ptr, block);
  }

  /** The heap's counters. */
  stats(): HeapStats {
    const reserved = this.#top - HEAP_ALIGN;
    return {
      shared: this.shared,
      liveBytes: this.#liveBytes,
      liveBlocks: this.#live.size,
      reservedBytes: reserved,
      cachedBytes: reserved - this.#liveBytes,
      memoryBytes: this.#size,
      maximumBytes: this.#maxPages * PAGE,
      allocs: this.#allocs,
      allocatedBytes: this.#allocated,
      releases: this.#releases,
      grows: this.#grows,
    };
  }

  /** Take `block` bytes from the top of the heap, growing the memory if needed. */
  #carve(block: number): number {
    const ptr = this.#top;
    const end = ptr + block;
    if (end > this.#size) this.#grow(end);
    this.#top = end;
    return ptr;
  }

  /** Best fit among the free ranges, else the top. */
  #allocLarge(block: number): number {
    const free = this.#large;
    let best = -1;
    for (let i = 0; i < free.length; i++) {
      const r = free[i];
      if (r.bytes >= block && (best < 0 || r.bytes < free[best].bytes)) {
        best = i;
        if (r.bytes === block) break;
      }
    }
    if (best < 0) return this.#carve(block);
    const r = free[best];
    const ptr = r.ptr;
    if (r.bytes === block) free.splice(best, 1);
    else {
      r.ptr += block;
      r.bytes -= block;
    }
    return ptr;
  }

  /** Insert a free range, coalesce it with its neighbours, and give a range at the top back. */
  #freeLarge(ptr: number, block: number): void {
    const free = this.#large;
    let lo = 0;
    let hi = free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (free[mid].ptr < ptr) lo = mid + 1;
      else hi = mid;
    }
    let r: Range = { ptr, bytes: block };
    const prev = free[lo - 1];
    if (prev && prev.ptr + prev.bytes === ptr) {
      prev.bytes += block;
      r = prev;
      lo--;
    } else free.splice(lo, 0, r);
    const next = free[lo + 1];
    if (next && r.ptr + r.bytes === next.ptr) {
      r.bytes += next.bytes;
      free.splice(lo + 1, 1);
    }
    if (r.ptr + r.bytes === this.#top) {
      this.#top = r.ptr;
      free.splice(lo, 1);
    }
  }

  /** Grow the memory to hold at least `end` bytes: by half its size or more, within the maximum. */
  #grow(end: number): void {
    const have = this.#size / PAGE;
    const need = Math.ceil(end / PAGE) - have;
    const room = this.#maxPages - have;
    if (need > room) {
      throw new RangeError(
        `cpu: out of memory: cannot allocate ${end - this.#top} bytes (${this.#liveBytes} bytes ` +
          `live, ${this.#maxPages * PAGE} bytes at most); dispose tensors you no longer need ` +
          "(dispose, tidy) or use smaller batches",
      );
    }
    const want = Math.min(room, Math.max(need, Math.ceil(have / 2)));
    try {
      this.memory.grow(want);
    } catch {
      this.memory.grow(need); // the host refused the larger step; take only what is needed
    }
    this.#grows++;
    this.#buffer = this.memory.buffer;
    this.#size = this.#buffer.byteLength;
  }
}

let heap: Heap | undefined;

/** The heap of the CPU backend (made on first use). */
export function defaultHeap(): Heap {
  // Shared: 64 MiB to start (untouched pages cost no memory). Each growth of a shared heap makes
  // the matmul worker pool start anew (workers see growth late), so early growths should be few.
  const shared = typeof SharedArrayBuffer === "function";
  return heap ??= new Heap(shared ? { initialBytes: DEFAULT_INITIAL } : {});
}

/** The default heap's initial size. */
const DEFAULT_INITIAL = 64 << 20;

/** The memory that holds every CPU tensor (shared when `SharedArrayBuffer` exists). */
export function heapMemory(): WebAssembly.Memory {
  return defaultHeap().memory;
}

/** The CPU heap's current buffer (see {@linkcode Heap.buffer}: re-take it after any `alloc`). */
export function heapBuffer(): ArrayBuffer | SharedArrayBuffer {
  return defaultHeap().buffer;
}

/** A 64-byte aligned block of at least `bytes` bytes in the CPU heap; its byte offset. */
export function alloc(bytes: number): number {
  return defaultHeap().alloc(bytes);
}

/** Return a block of the CPU heap (`bytes` as given to `alloc`). */
export function release(ptr: number, bytes: number): void {
  defaultHeap().release(ptr, bytes);
}

/** The CPU heap's counters: live, reserved and cached bytes, memory size, grows. */
export function heapStats(): HeapStats {
  return defaultHeap().stats();
}
