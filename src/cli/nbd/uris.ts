// Side effect: vmforge commands that open images by name accept NBD URIs (src/nbd/open-uri.ts).
import { registerNbdProtocols } from '../../nbd/open-uri.js';

registerNbdProtocols();
