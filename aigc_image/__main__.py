from aigc_image.cli import main

if __name__ == "__main__":  # not when a child process (the image encoders) imports it
    raise SystemExit(main())
