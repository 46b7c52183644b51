import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "guest/**/*.c", ".hotrestore/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["describe", "it", "test", "suite"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowBoolean: true },
      ],
      "no-restricted-properties": [
        "error",
        { object: "process", property: "exit", message: "Only the CLI entry point may call process.exit" },
      ],
    },
  },
  {
    files: ["bin/*.js", "eslint.config.js", "src/**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // Browser scripts inlined into the HTML reports and the web page (globals declared in them).
    files: ["src/**/assets/*.js"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      sourceType: "script",
    },
  },
  {
    files: [
      "src/cli/main.ts",
      "src/daemon/main.ts",
      "src/demo/main.ts",
      "src/bench/main.ts",
      "scripts/**/*.ts",
    ],
    rules: { "no-restricted-properties": "off" },
  },
);
