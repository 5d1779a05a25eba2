// Side-effect imports: each feature's CLI registers itself as a `vmforge` subprogram here.
// (nbd, firmware, hugepages, run and qmp add one line each.)
export {};
import './hugepages/index.js';
import './io-cmd/index.js';
import './firmware/index.js';
import './run/index.js';
