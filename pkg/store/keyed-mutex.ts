/**
 * Serialises async operations per key (here: per digest, so that removing a blob file and publishing a new
 * file under the same name never interleave). The slot is taken synchronously when `run` is called, so
 * call order is execution order.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const { promise: done, resolve: release } = Promise.withResolvers<undefined>();
    const tail = previous.then(() => done);
    this.tails.set(key, tail);
    try {
      await previous;
      return await fn();
    } finally {
      release(undefined);
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
