from .host.start import main

raise SystemExit(main())
