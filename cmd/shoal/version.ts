/** Shoal's version, reported by --version and the shoal_build_info metric. Keep in step with package.json. */
export const VERSION = "0.1.0";
