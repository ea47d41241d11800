import { runTrackerConformance } from "./testing/conformance.js";
import { grpcHarness } from "./testing/harnesses.js";

runTrackerConformance("GrpcTrackerClient ↔ TrackerServer", grpcHarness);
