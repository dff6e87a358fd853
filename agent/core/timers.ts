/** The clock and timers, injected so backoff and alert timing are tested without sleeping. */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/**
 * Timers that gather their callbacks into slots of `slotMs()` on the clock of `base`: a callback
 * asked for in `ms` runs at the start of the slot its due time falls in (never later than asked, at
 * most one slot early; counted from the last slot run when the clock has not reached it yet), and every callback of one slot runs from a single timer of `base`. Many
 * VMs' heartbeats then wake the process once per slot, together, instead of once each: the
 * wake-ups, timer bookkeeping and socket polls of a batch are shared. A delay shorter than a slot
 * is kept as asked (its own slot).
 */
export function slottedTimers(base: Timers, slotMs: () => number): Timers {
  interface Entry {
    fn: () => void;
    slot: Slot;
  }
  interface Slot {
    at: number;
    handle: unknown;
    entries: Set<Entry>;
  }
  const slots = new Map<number, Slot>();
  /**
   * The last slot that ran. A base timer may fire a little before `base.now()` reaches its slot (the
   * event loop's clock is not the wall clock): a callback set again from within that slot must still
   * land in a later one, or it would run twice in one slot.
   */
  let lastFired = -Infinity;
  const fire = (slot: Slot): void => {
    lastFired = Math.max(lastFired, slot.at);
    slots.delete(slot.at);
    for (const entry of slot.entries) entry.fn();
    slot.entries.clear();
  };
  return {
    now: () => base.now(),
    setTimeout: (fn, ms) => {
      const now = base.now();
      const width = Math.max(1, slotMs());
      const at = ms < width ? now + ms : Math.floor((Math.max(now, lastFired) + ms) / width) * width;
      let slot = slots.get(at);
      if (!slot) {
        const created: Slot = { at, handle: null, entries: new Set() };
        created.handle = base.setTimeout(() => fire(created), Math.max(0, at - now));
        slots.set(at, created);
        slot = created;
      }
      const entry: Entry = { fn, slot };
      slot.entries.add(entry);
      return entry;
    },
    clearTimeout: (handle) => {
      const entry = handle as Entry | null | undefined;
      if (!entry?.slot) return;
      const slot = entry.slot;
      if (!slot.entries.delete(entry) || slot.entries.size > 0 || slots.get(slot.at) !== slot) return;
      base.clearTimeout(slot.handle);
      slots.delete(slot.at);
    },
  };
}
