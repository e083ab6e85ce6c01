// ssehub.js as an ES module, for bundlers (Vite, webpack) and
// <script type="module">: the same code, which also defines the global
// `SSEHub` when loaded this way. Types: ssehub.d.mts.
import './ssehub.js';

const SSEHub = globalThis.SSEHub;

export const subscribe = SSEHub.subscribe;
export default SSEHub;
