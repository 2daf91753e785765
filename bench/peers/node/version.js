// The installed version of a package of this folder (package.json "exports" may hide it from require).
'use strict';
const fs = require('fs');
const path = require('path');
module.exports = (name) => JSON.parse(
  fs.readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;
