import type { Logger } from "pino";
import { PeerError } from "./errors.js";
import { ExchangeChannel, ExchangeUnsupported } from "./exchange-channel.js";
import type { PieceReceiver } from "./piece-receiver.js";
import type { PieceReadRequest, ReceivedPiece } from "./piece-source.js";
import type { SessionPool } from "./session-pool.js";

/**
 * How long a peer that answered Exchange with UNIMPLEMENTED is read with ReadPieces only, before Exchange
 * is tried again (it may have been upgraded meanwhile: a rolling upgrade takes minutes).
 */
export const READ_PIECES_ONLY_MS = 60_000;
/** Past this many remembered peers, expired entries are dropped. */
const MAX_READ_PIECES_ONLY_PEERS = 1_024;

export interface ExchangeChannelsOptions {
  readonly pool: SessionPool;
  /** A stream without reads for this long is closed. */
  readonly idleCloseMs: number;
  readonly receiver: (request: PieceReadRequest, peerAddress: string) => PieceReceiver;
  readonly onWasted?: ((bytes: number) => void) | undefined;
  readonly logger: Logger;
}

/**
 * The Exchange streams of one PeerClient: one per peer address, opened on the first read, forgotten once
 * it fails, goes idle or is retired; and the peers that do not serve Exchange, read with calls for a while.
 */
export class ExchangeChannels {
  private readonly channels = new Map<string, ExchangeChannel>();
  /** Peers that answered Exchange with UNIMPLEMENTED, until when they are asked with ReadPieces only. */
  private readonly readPiecesOnly = new Map<string, number>();

  constructor(private readonly options: ExchangeChannelsOptions) {}

  /** Streams open now (tests). */
  get size(): number {
    return this.channels.size;
  }

  /** Whether `peerAddress` is to be read over Exchange (false for a while after it answered UNIMPLEMENTED). */
  speaksExchange(peerAddress: string): boolean {
    const until = this.readPiecesOnly.get(peerAddress);
    if (until === undefined) return true;
    if (performance.now() < until) return false;
    this.readPiecesOnly.delete(peerAddress);
    return true;
  }

  /**
   * A read over the pair's stream (ExchangeChannel.read). ExchangeUnsupported, thrown before any piece, is
   * remembered for the peer and passed on: the caller makes the read with ReadPieces.
   */
  async *read(
    peerAddress: string,
    request: PieceReadRequest,
    signal: AbortSignal,
    stallTimeoutMs: number,
    onData?: (bytes: number) => void,
  ): AsyncGenerator<ReceivedPiece, void, undefined> {
    try {
      yield* this.channel(peerAddress).read(request, signal, stallTimeoutMs, onData);
    } catch (error: unknown) {
      if (error instanceof ExchangeUnsupported) {
        this.readPiecesOnly.set(peerAddress, performance.now() + READ_PIECES_ONLY_MS);
        this.options.logger.debug({ peer: peerAddress }, "peer does not serve Exchange: using ReadPieces calls");
      }
      throw error;
    }
  }

  /** After a certificate rotation: the streams open now take no new reads and close once theirs are over. */
  retire(): void {
    for (const channel of [...this.channels.values()]) channel.retire();
  }

  /** Fails every read with `error` and cuts the streams. */
  destroy(error: Error): void {
    for (const channel of [...this.channels.values()]) channel.destroy(error);
  }

  /** The pair's stream, opened when there is none (or the last one failed or went idle). */
  private channel(peerAddress: string): ExchangeChannel {
    const open = this.channels.get(peerAddress);
    if (open?.usable === true) return open;
    open?.retire();
    const lease = this.options.pool.acquire(peerAddress);
    let channel: ExchangeChannel;
    try {
      channel = new ExchangeChannel({
        address: peerAddress,
        lease,
        idleCloseMs: this.options.idleCloseMs,
        onRetired: (retired) => {
          if (this.channels.get(peerAddress) === retired) this.channels.delete(peerAddress);
        },
        receiver: (request) => this.options.receiver(request, peerAddress),
        onWasted: this.options.onWasted,
      });
    } catch (error: unknown) {
      lease.release();
      throw new PeerError("ERR_PEER_UNAVAILABLE", `peer ${peerAddress}: cannot open a stream`, { cause: error });
    }
    this.channels.set(peerAddress, channel);
    if (this.readPiecesOnly.size > MAX_READ_PIECES_ONLY_PEERS) {
      const now = performance.now();
      for (const [address, until] of this.readPiecesOnly) if (until <= now) this.readPiecesOnly.delete(address);
    }
    return channel;
  }
}
