from xrayscreen.cli import main

raise SystemExit(main())
