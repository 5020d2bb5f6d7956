from micropipe.cli import main

raise SystemExit(main())
