from aigc_image.cli import main

raise SystemExit(main())
