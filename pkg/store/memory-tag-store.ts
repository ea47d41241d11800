import { StoreError } from "./errors.js";
import { TagRecords } from "./tag-records.js";
import type { TagRecord, TagStore } from "./tag-store.js";

/** TagStore in memory, for tests and for agents without a data directory. */
export class MemoryTagStore implements TagStore {
  private readonly records: TagRecords;
  private closed = false;

  constructor(options: { maxRecords?: number } = {}) {
    this.records = new TagRecords(options.maxRecords);
  }

  get(registry: string, name: string, tag: string): TagRecord | undefined {
    return this.records.get(registry, name, tag);
  }

  set(registry: string, name: string, tag: string, record: TagRecord): void {
    if (this.closed) throw new StoreError("ERR_STORE_CLOSED", "tag store closed");
    this.records.set(registry, name, tag, record);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
