from mlscale.cli.main import main

raise SystemExit(main())
