// ESLint for the signaling app's browser client (`make lint`, run from the repository
// root with --config, so the paths below are relative to the root).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    // Plain ES modules loaded by index.html (<script type="module">), no build step.
    files: ["app/src/signaling/static/js/**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: globals.browser,
    },
    rules: {
      // `const { token: _secret, ...visible } = welcome` leaves a field out of a copy.
      "no-unused-vars": ["error", { ignoreRestSiblings: true }],
    },
  },
  {
    files: ["tests/lint/*.js"],
    languageOptions: {
      sourceType: "module",
      globals: globals.node,
    },
  },
];
