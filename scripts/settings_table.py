"""Print the settings table of docs/configuration.md from the code (tests/test_docs.py checks it)."""

from __future__ import annotations

from aigc_image.config import iter_setting_docs, load_settings


def main() -> None:
    settings = load_settings(environ={})
    print("| TOML key | Environment variable | Default | Meaning |")
    print("|---|---|---|---|")
    for key, env, doc in iter_setting_docs():
        value: object = settings
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, tuple):
            shown = f"`{','.join(map(str, value))}`" if value else "none"
        elif value == "":
            shown = '""'
        elif isinstance(value, bool):
            shown = f"`{str(value).lower()}`"
        else:
            shown = f"`{value}`"
        print(f"| `{key}` | {f'`{env}`' if env else '(file only)'} | {shown} | {doc} |")


if __name__ == "__main__":
    main()
