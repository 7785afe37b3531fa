// The guest-side prelude, evaluated in every fresh context before the script. It removes ambient authority
// (X4), builds `ctx` from the granted capabilities only, and holds the intrinsics the host relies on in a
// closure the script cannot reach. Nothing here is trusted by the host: the worker re-checks every value.

/** Globals a script may see; everything else is deleted. `globals.test.ts` snapshots the result. */
export const GUEST_GLOBALS: readonly string[] = Object.freeze([
  'AggregateError',
  'Array',
  'ArrayBuffer',
  'BigInt',
  'BigInt64Array',
  'BigUint64Array',
  'Boolean',
  'DataView',
  'Date',
  'Error',
  'EvalError',
  'Float16Array',
  'Float32Array',
  'Float64Array',
  'Function',
  'Infinity',
  'Int16Array',
  'Int32Array',
  'Int8Array',
  'InternalError',
  'Iterator',
  'JSON',
  'Map',
  'Math',
  'NaN',
  'Number',
  'Object',
  'Promise',
  'Proxy',
  'RangeError',
  'ReferenceError',
  'Reflect',
  'RegExp',
  'Set',
  'String',
  'Symbol',
  'SyntaxError',
  'TypeError',
  'URIError',
  'Uint16Array',
  'Uint32Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'WeakMap',
  'WeakSet',
  'decodeURI',
  'decodeURIComponent',
  'encodeURI',
  'encodeURIComponent',
  'escape',
  'globalThis',
  'isFinite',
  'isNaN',
  'parseFloat',
  'parseInt',
  'undefined',
  'unescape',
]);

/**
 * Evaluates (as a global script) to `function (hostCall, hostLog, limits)` returning the host's private
 * handles: { runMain, makeHostError, describeThrown, parse }. It runs before the job is known (the sandbox is
 * prepared while the thread is idle); the granted capabilities arrive with `runMain`.
 */
export const PRELUDE_SOURCE = String.raw`(function (hostCall, hostLog, limits) {
  'use strict';
  const G = globalThis;
  const { stringify, parse } = JSON;
  const { keys, getOwnPropertyNames, getPrototypeOf, freeze, create, defineProperty } = Object;
  const ObjectProto = Object.prototype;
  const isArray = Array.isArray;
  const numberIsFinite = Number.isFinite;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const StringCtor = String;
  const apply = Reflect.apply;
  const construct = Reflect.construct;
  const hostErrors = new WeakMap();
  const weakGet = WeakMap.prototype.get;
  const weakSet = WeakMap.prototype.set;
  const slice = String.prototype.slice;
  const allowed = new Set(limits.globals);
  const setHas = Set.prototype.has;

  function boundaryFailure(code, message) {
    const e = new ErrorCtor(message);
    e.code = code;
    apply(weakSet, hostErrors, [e, code]);
    return e;
  }

  // No clock: Date.now(), Date() and new Date() without arguments throw; dates from explicit values still work.
  const RealDate = G.Date;
  const noClock = () => { throw new TypeErrorCtor('scripts have no clock: call ctx.sal.time.now() (capability time.now)'); };
  function Date(...args) {
    if (new.target === undefined || args.length === 0) noClock();
    return construct(RealDate, args, new.target);
  }
  Date.prototype = RealDate.prototype;
  Date.UTC = RealDate.UTC;
  Date.parse = RealDate.parse;
  Date.now = noClock;
  defineProperty(RealDate.prototype, 'constructor', { value: Date, writable: true, configurable: true, enumerable: false });
  G.Date = Date;
  // No randomness: Math.random throws rather than being absent, so the message says what to use instead.
  Math.random = function random() { throw new TypeErrorCtor('scripts have no randomness: call ctx.sal.random.bytes({n}) (capability random.bytes)'); };

  for (const name of Reflect.ownKeys(G)) {
    if (typeof name !== 'string' || !apply(setHas, allowed, [name])) delete G[name];
  }

  // Checks a value is plain, bounded JSON before it leaves, so the script gets a precise error early. The host
  // repeats the check on the text it receives.
  function encode(value, what) {
    let nodes = 0;
    const path = [];
    function check(v, depth) {
      if (++nodes > limits.maxNodes) throw boundaryFailure('BOUNDARY_INVALID', what + ' has more than ' + limits.maxNodes + ' values');
      const t = typeof v;
      if (v === null || t === 'string' || t === 'boolean') return;
      if (t === 'number') {
        if (!numberIsFinite(v)) throw boundaryFailure('BOUNDARY_INVALID', what + ' holds a non-finite number');
        return;
      }
      if (t !== 'object') throw boundaryFailure('BOUNDARY_INVALID', what + ' holds a ' + t + ', which is not JSON');
      if (depth >= limits.maxDepth) throw boundaryFailure('BOUNDARY_INVALID', what + ' nests deeper than ' + limits.maxDepth + ' levels');
      for (let i = 0; i < path.length; i++) if (path[i] === v) throw boundaryFailure('BOUNDARY_INVALID', what + ' holds a cycle');
      path[path.length] = v;
      if (isArray(v)) {
        for (let i = 0; i < v.length; i++) check(v[i], depth + 1);
      } else {
        const proto = getPrototypeOf(v);
        if (proto !== ObjectProto && proto !== null) throw boundaryFailure('BOUNDARY_INVALID', what + ' holds a non-plain object');
        const ks = keys(v);
        for (let i = 0; i < ks.length; i++) {
          const item = v[ks[i]];
          if (item !== undefined) check(item, depth + 1);
        }
      }
      path.length = path.length - 1;
    }
    const top = value === undefined ? null : value;
    check(top, 0);
    const text = stringify(top);
    if (text.length > limits.maxBytes) throw boundaryFailure('OUTPUT_TOO_LARGE', what + ' is larger than ' + limits.maxBytes + ' bytes');
    return text;
  }

  // Lines past the host's cap are dropped here, before they cross: a crossing costs the host ~20 µs of CPU and
  // garbage, so a flood of dropped lines used to starve the thread and its neighbours. One line past the cap
  // still crosses so that the host sends its notice; the host keeps its own count regardless.
  let linesLeft = limits.maxLines + 1;
  function logLine(level) {
    return function (message) {
      if (linesLeft <= 0) return;
      linesLeft--;
      let text = typeof message === 'string' ? message : StringCtor(message);
      if (text.length > limits.maxLineChars) text = apply(slice, text, [0, limits.maxLineChars]) + ' [truncated]';
      hostLog(level, text);
    };
  }

  const split = String.prototype.split;
  function buildCtx(caps, jobJson) {
    const sal = create(null);
    for (let i = 0; i < caps.length; i++) {
      const name = caps[i];
      const parts = apply(split, name, ['.']);
      let node = sal;
      for (let j = 0; j < parts.length - 1; j++) {
        if (node[parts[j]] === undefined) node[parts[j]] = create(null);
        node = node[parts[j]];
      }
      const fn = async function (args) { return hostCall(name, encode(args === undefined ? {} : args, name + ' arguments')); };
      defineProperty(fn, 'name', { value: parts[parts.length - 1] });
      node[parts[parts.length - 1]] = fn;
    }
    // Every other capability is there too, hidden from enumeration, as a function that fails with what to sign
    // instead: a script reaching for one it was not granted learns which, not "cannot read property of undefined".
    for (let i = 0; i < limits.capabilities.length; i++) {
      const name = limits.capabilities[i];
      const parts = apply(split, name, ['.']);
      let node = sal;
      for (let j = 0; j < parts.length - 1; j++) {
        if (node[parts[j]] === undefined) defineProperty(node, parts[j], { value: create(null), enumerable: false });
        node = node[parts[j]];
      }
      const leaf = parts[parts.length - 1];
      if (node[leaf] !== undefined) continue;
      const denied = async function () { throw boundaryFailure('CAPABILITY_NOT_GRANTED', name + ' (sign with --caps ' + name + ')'); };
      defineProperty(denied, 'name', { value: leaf });
      defineProperty(node, leaf, { value: denied, enumerable: false });
    }
    return freeze({ log: freeze({ info: logLine('info'), warn: logLine('warn'), error: logLine('error') }), sal: deepFreeze(sal), job: freeze(parse(jobJson)) });
  }
  function deepFreeze(o) {
    const ks = getOwnPropertyNames(o);
    for (let i = 0; i < ks.length; i++) if (typeof o[ks[i]] === 'object') deepFreeze(o[ks[i]]);
    return freeze(o);
  }

  // Resolves to the result as JSON text, or to [code, message] when the script is not runnable.
  async function runMain(namespace, argsJson, caps, jobJson) {
    const ctx = buildCtx(caps, jobJson);
    const ns = await namespace;
    const main = ns.default;
    if (typeof main !== 'function') return ['SCRIPT_INVALID', 'the script has no default export function'];
    const value = await main(parse(argsJson), ctx);
    try {
      return encode(value, 'the result');
    } catch (e) {
      const code = apply(weakGet, hostErrors, [e]);
      if (code === undefined) throw e;
      return [code, e.message];
    }
  }

  function makeHostError(code, message, detailsJson) {
    const e = new ErrorCtor(message);
    e.code = code;
    if (detailsJson !== undefined) e.details = parse(detailsJson);
    apply(weakSet, hostErrors, [e, code]);
    return e;
  }

  function hostErrorCode(e) {
    const code = (typeof e === 'object' && e !== null) ? apply(weakGet, hostErrors, [e]) : undefined;
    return code === undefined ? '' : code;
  }

  // Reads a thrown value as short strings: [name, message, stack, hostCode, getterFault]. Runs under a small
  // extra time budget because getters are guest code; a getter that throws is reported, not taken for a
  // missing property.
  function describeThrown(e) {
    const cut = (s) => { const t = typeof s === 'string' ? s : ''; return t.length > 4096 ? apply(slice, t, [0, 4096]) : t; };
    if ((typeof e !== 'object' && typeof e !== 'function') || e === null) return ['', cut(typeof e === 'string' ? e : StringCtor(e)), '', hostErrorCode(e), ''];
    let getterFault = '';
    const read = (key) => {
      try {
        return cut(e[key]);
      } catch (inner) {
        if (getterFault === '') getterFault = cut("the thrown error's " + key + ' getter threw ' + describeInner(inner));
        return '';
      }
    };
    const name = read('name'), message = read('message'), stack = read('stack');
    return [name, message, stack, hostErrorCode(e), getterFault];
  }

  // What a getter threw, without calling the guest's toString: "TypeError: boom", a primitive, or "a value".
  function describeInner(v) {
    if (typeof v === 'string') return quoted(v);
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null) return typeof v === 'symbol' ? 'a symbol' : StringCtor(v);
    try {
      const n = v.name, m = v.message;
      if (typeof n === 'string' && typeof m === 'string') return m === '' ? n : n + ': ' + m;
      if (typeof m === 'string') return m;
    } catch {}
    return 'a value that is not an Error';
  }
  function quoted(t) { return stringify(t.length > 1024 ? apply(slice, t, [0, 1024]) : t); }

  return { runMain, makeHostError, describeThrown, parse };
})`;
