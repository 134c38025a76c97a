from nacelle.cli import main

raise SystemExit(main())
