/**
 * fast-check for the test suite, with a fixed global seed so that a CI run is reproducible:
 * every property explores the same cases on every machine. Set `FC_SEED=<integer>` to explore
 * other cases locally (a failure prints its seed and path, as usual).
 */
import fc from "fast-check";

const env = Deno.env.get("FC_SEED");
fc.configureGlobal({ seed: env === undefined ? 20261128 : Number(env) });

export default fc;
