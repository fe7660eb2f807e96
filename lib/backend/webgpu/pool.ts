/**
 * A size-keyed pool of GPU buffers. Freed buffers wait here, grouped by usage and size class,
 * and are handed out again instead of allocating; beyond a byte cap they are destroyed. Size
 * classes are 256 bytes or four steps per power of two, so a reused buffer is at most 25%
 * larger than asked for. Memory accounting of tensors is done by lib/tensor.ts, not here.
 *
 * @example
 * ```ts
 * const pool = bufferPool(device, 256 * 2 ** 20);
 * const b = pool.acquire("storage", 1000); // a 1024-byte buffer
 * pool.release(b);
 * ```
 *
 * @module
 */

/** What a pooled buffer is used for. */
export type BufferKind = "storage" | "uniform" | "staging";

/** Counters of a pool, for tests and diagnostics. */
export interface PoolStats {
  /** GPUBuffers created since the pool was made. */
  created: number;
  /** GPUBuffers destroyed because the pool was full. */
  destroyed: number;
  /** Buffers handed out and not yet released. */
  inUse: number;
  /** Buffers waiting in the pool. */
  pooled: number;
  /** Bytes waiting in the pool. */
  pooledBytes: number;
}

/** A buffer pool; see the module doc. */
export interface BufferPool {
  /** A buffer of at least `bytes` bytes (4 at least), pooled or new. */
  acquire(kind: BufferKind, bytes: number): GPUBuffer;
  /** Give a buffer back; it may be destroyed later by {@link BufferPool.drain}. */
  release(b: GPUBuffer): void;
  /** Destroy what went over the cap; call only once no pending command uses those buffers. */
  drain(): void;
  /** Counters. */
  readonly stats: PoolStats;
}

const USAGE: Record<BufferKind, number> = {
  storage: 0x80 | 0x04 | 0x08, // STORAGE | COPY_SRC | COPY_DST
  uniform: 0x40 | 0x08, // UNIFORM | COPY_DST
  staging: 0x01 | 0x08, // MAP_READ | COPY_DST
};

/**
 * The size class of a request: 256 bytes, or four steps per power of two above.
 *
 * @example
 * ```ts
 * sizeClass(1000); // 1024
 * ```
 */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes - 1));
  const step = p / 4;
  return Math.ceil(bytes / step) * step;
}

/**
 * Make a pool on `device` that keeps at most `capBytes` idle bytes.
 *
 * @example
 * ```ts
 * const pool = bufferPool(device, 1 << 28);
 * ```
 */
export function bufferPool(device: GPUDevice, capBytes: number): BufferPool {
  const free = new Map<string, GPUBuffer[]>();
  const kindOf = new WeakMap<GPUBuffer, BufferKind>();
  const doomed: GPUBuffer[] = [];
  const stats: PoolStats = { created: 0, destroyed: 0, inUse: 0, pooled: 0, pooledBytes: 0 };
  return {
    stats,
    acquire(kind, bytes) {
      const size = sizeClass(Math.max(4, bytes));
      const list = free.get(`${kind}:${size}`);
      stats.inUse++;
      const reused = list?.pop();
      if (reused) {
        stats.pooled--;
        stats.pooledBytes -= size;
        return reused;
      }
      const b = device.createBuffer({ size, usage: USAGE[kind] });
      kindOf.set(b, kind);
      stats.created++;
      return b;
    },
    release(b) {
      stats.inUse--;
      const kind = kindOf.get(b);
      if (kind === undefined) throw new Error("webgpu: internal error, buffer not from this pool");
      if (stats.pooledBytes + b.size > capBytes) {
        doomed.push(b);
        return;
      }
      const key = `${kind}:${b.size}`;
      let list = free.get(key);
      if (!list) free.set(key, list = []);
      list.push(b);
      stats.pooled++;
      stats.pooledBytes += b.size;
    },
    drain() {
      for (const b of doomed.splice(0)) {
        b.destroy();
        stats.destroyed++;
      }
    },
  };
}
